// Package pgtest gives integration tests a fresh PostgreSQL database with
// the reference schema, on the real server that `make test` starts
// (WALCAST_TEST_DATABASE_URL). Each call makes its own database from a
// migrated template, and its cleanup drops the database and every
// replication slot in it, so tests never share a slot or a publication.
package pgtest
