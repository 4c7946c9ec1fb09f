// Package relay is the step between a change source and the sockets: it
// takes what a source produced (a committed transaction from the WAL, a
// gap the reader found, an event from the cluster stream, a NOTIFY
// revocation) and hands events on, to this process's hub or, in cluster
// mode, through the bus that feeds every replica's hub. It is the one
// place where a source's output becomes published events, and it needs no
// database: its collaborators are small interfaces.
package relay
