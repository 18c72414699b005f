package storage

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

func benchRecords(n int) []EnvelopeRecord {
	recs := make([]EnvelopeRecord, n)
	data := make([]byte, 512) // a typical sealed text message
	for i := range recs {
		recs[i] = EnvelopeRecord{Key: EnvelopeKey{Topic: topic(1), Time: uint64(i), ID: opID(i)}, Data: data}
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

// BenchmarkCollect: what the node's hourly Collect costs on a phone-sized store (16 MiB of 4 KiB
// envelopes, a tenth of them deleted), against writing those 16 MiB (PutEnvelopes) in the same run.
func BenchmarkCollect(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		s, _ := newStore(b)
		var top [16]byte
		var ids [][IDSize]byte
		put := time.Now()
		for batch := range 64 {
			var recs []EnvelopeRecord
			for i := range 64 {
				n := batch*64 + i
				recs = append(recs, EnvelopeRecord{Key: EnvelopeKey{Topic: top, Time: uint64(n), ID: opID(n)}, Data: bytes.Repeat([]byte{byte(i)}, 4096)})
				if n%10 == 0 {
					ids = append(ids, opID(n))
				}
			}
			if _, err := s.PutEnvelopes(recs); err != nil {
				b.Fatal(err)
			}
		}
		wrote := time.Since(put)
		if err := s.DeleteEnvelopes(ids); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		c, err := s.Collect()
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		b.ReportMetric(float64(c.Took)/float64(wrote), "x-writing-16MiB")
		b.ReportMetric(float64(c.LSMAfter)/(1<<20), "MiB-after")
		s.Close()
		b.StartTimer()
	}
}
