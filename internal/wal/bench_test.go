package wal

import (
	"testing"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/walcast/walcast/internal/events"
)

var messageCols = []col{
	{"id", pgtype.UUIDOID, true}, {"project_id", pgtype.UUIDOID, true}, {"sender_id", pgtype.UUIDOID, true},
	{"content", pgtype.TextOID, true}, {"message_type", pgtype.TextOID, true},
	{"created_at", pgtype.TimestamptzOID, true}, {"updated_at", pgtype.TimestamptzOID, true},
}

// BenchmarkDecodeAndMap measures the per-change cost of the pipeline's pure
// part on one core: pgoutput decoding, typed values, event mapping and JSON
// marshaling of a one-row messages transaction (Begin, Insert, Commit).
// changes/s = 1e9 / (ns/op).
func BenchmarkDecodeAndMap(b *testing.B) {
	d := NewDecoder(func(string, string) bool { return true })
	if _, err := d.Decode(relationMsg(1, "public", "messages", messageCols...)); err != nil {
		b.Fatal(err)
	}
	m, err := events.NewMapper(events.Options{Tables: events.DefaultTables(), BulkThreshold: 500})
	if err != nil {
		b.Fatal(err)
	}
	begin := beginMsg(0x1000, at, 7)
	insert := insertMsg(1, "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb",
		"11111111-1111-4111-8111-111111111111", "hello, this is a chat message of ordinary length", "text",
		"2026-11-26 16:42:00.123456+00", "2026-11-26 16:42:00.123456+00")
	commit := commitMsg(0x1000, 0x1100, at)
	var buf []events.Event
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := d.Decode(begin); err != nil {
			b.Fatal(err)
		}
		if _, err := d.Decode(insert); err != nil {
			b.Fatal(err)
		}
		txn, err := d.Decode(commit)
		if err != nil || txn == nil {
			b.Fatal(err)
		}
		buf, _ = m.Map(txn, buf[:0])
		if len(buf) != 2 {
			b.Fatal(len(buf))
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "changes/s")
}
