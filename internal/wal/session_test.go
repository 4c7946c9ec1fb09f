package wal

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/walcast/walcast/internal/metrics"
)

func xlogData(walStart uint64, msg []byte) []byte {
	b := []byte{'w'}
	b = binary.BigEndian.AppendUint64(b, walStart)
	b = binary.BigEndian.AppendUint64(b, walStart+uint64(len(msg)))
	b = binary.BigEndian.AppendUint64(b, 0)
	return append(b, msg...)
}

// A message that does not decode stops the transaction: nothing reaches the
// sink, the error names the LSN, the metric counts it, and the confirmable
// position stays before the transaction.
func TestDecodeErrorStopsTheTransaction(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry())
	rec := &recorder{}
	r := NewReader(Config{}, watchAll, rec.sink, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), m)
	s := &session{r: r, dec: NewDecoder(watchAll)}
	ctx := context.Background()
	steps := [][]byte{
		xlogData(0x100, relationMsg(1, "public", "tasks", taskCols...)),
		xlogData(0x200, beginMsg(0x300, at, 5)),
	}
	for _, st := range steps {
		if err := s.handleCopyData(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	bad := insertMsg(1, "t1")
	bad = append(bad[:len(bad)-6], 'x', 0, 0) // a tuple column of unknown kind, cut short
	err := s.handleCopyData(ctx, xlogData(0x250, bad))
	if err == nil || !strings.Contains(err.Error(), "decode WAL at 0/250") {
		t.Fatalf("err = %v", err)
	}
	if got := testutil.ToFloat64(m.WALDecodeErrors); got != 1 {
		t.Fatalf("walcast_wal_decode_errors_total = %v", got)
	}
	if rec.count() != 0 {
		t.Fatal("a transaction with an undecodable change reached the sink")
	}
	if target := r.cp.target(r.now(), 0x400, s.openTxn); target > 0x300 {
		t.Fatalf("confirmable position %#x passes the open transaction at 0x300", target)
	}
}
