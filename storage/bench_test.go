package storage

import (
	"fmt"
	"testing"
)

func benchRecords(n int) []EnvelopeRecord {
	recs := make([]EnvelopeRecord, n)
	data := make([]byte, 512) // a typical sealed text message
	for i := range recs {
		recs[i] = EnvelopeRecord{Key: EnvelopeKey{Topic: topic(1), Time: uint64(i), ID: id32(i)}, Data: data}
	}
	return recs
}

// BenchmarkPutEnvelopeSingle stores one envelope per PutEnvelopes call: one
// fsync per envelope.
func BenchmarkPutEnvelopeSingle(b *testing.B) {
	s, _ := newStore(b)
	recs := benchRecords(b.N)
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.PutEnvelopes(recs[i : i+1]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/envelope")
}

// BenchmarkPutEnvelopesBatch stores batches of envelopes per call: one fsync
// per batch.
func BenchmarkPutEnvelopesBatch(b *testing.B) {
	for _, size := range []int{16, 256} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			s, _ := newStore(b)
			recs := benchRecords(b.N * size)
			b.ResetTimer()
			for i := range b.N {
				if _, err := s.PutEnvelopes(recs[i*size : (i+1)*size]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/envelope")
		})
	}
}
