// Package pgtest gives integration tests a fresh PostgreSQL database with
// the reference schema: on the server `make test` starts
// (WALCAST_TEST_DATABASE_URL), or, when that is unset, on a throwaway
// server the test binary starts itself from PostgreSQL's binaries (a
// package's TestMain calls Main to remove it). Each call makes its own
// database from a migrated template, and its cleanup drops the database
// and every replication slot in it, so tests never share a slot or a
// publication. NewCluster gives a test a server of its own, to stop,
// restart or snapshot.
package pgtest
