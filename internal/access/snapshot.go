package access

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Snapshot is a PostgreSQL MVCC snapshot as pg_current_snapshot() prints
// it: every transaction with a full id below Xmin is finished, none at or
// above Xmax is, and between them those in InProgress were still running.
type Snapshot struct {
	Xmin, Xmax uint64
	InProgress []uint64
}

// ParseSnapshot reads the text form "xmin:xmax:xip,xip,...".
func ParseSnapshot(s string) (Snapshot, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return Snapshot{}, fmt.Errorf("snapshot %q: want xmin:xmax:xip_list", s)
	}
	var snap Snapshot
	var err error
	if snap.Xmin, err = strconv.ParseUint(parts[0], 10, 64); err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %q: xmin: %w", s, err)
	}
	if snap.Xmax, err = strconv.ParseUint(parts[1], 10, 64); err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %q: xmax: %w", s, err)
	}
	if snap.Xmin > snap.Xmax {
		return Snapshot{}, fmt.Errorf("snapshot %q: xmin after xmax", s)
	}
	if parts[2] != "" {
		for _, x := range strings.Split(parts[2], ",") {
			v, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				return Snapshot{}, fmt.Errorf("snapshot %q: in-progress id: %w", s, err)
			}
			if v < snap.Xmin || v >= snap.Xmax {
				return Snapshot{}, fmt.Errorf("snapshot %q: in-progress id %d outside [xmin, xmax)", s, v)
			}
			snap.InProgress = append(snap.InProgress, v)
		}
	}
	return snap, nil
}

// errFuture marks a 32-bit id that is not older than the snapshot's xmax.
var errFuture = errors.New("transaction id at or after the snapshot's xmax")

// full widens a 32-bit transaction id (what pgoutput's Begin carries) to
// the 64-bit id it has relative to ref, a recent full id: the one within
// 2^31 below ref (ids wrap around; PostgreSQL never lets two live ids be
// further apart). An id at or after ref is reported as errFuture.
func full(xid uint32, ref uint64) (uint64, error) {
	d := int32(uint32(ref) - xid)
	if d <= 0 || uint64(d) > ref {
		return 0, errFuture
	}
	return ref - uint64(d), nil
}

// Sees reports whether the committed transaction xid is visible in s: it
// had left the set of running transactions when s was taken. A commit
// walcast read from the WAL may still be running for other sessions (the
// walsender streams it before the backend leaves the ProcArray, and while
// it waits for a synchronous standby).
func (s Snapshot) Sees(xid uint32) bool {
	f, err := full(xid, s.Xmax)
	if err != nil {
		return false
	}
	if f < s.Xmin {
		return true
	}
	for _, x := range s.InProgress {
		if x == f {
			return false
		}
	}
	return true
}

// Settled reports whether xid is visible in every snapshot taken after s:
// it had finished before the oldest transaction s saw running.
func (s Snapshot) Settled(xid uint32) bool {
	f, err := full(xid, s.Xmax)
	return err == nil && f < s.Xmin
}
