package chaos

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strings"
	"testing"
)

// pcapWriter builds classic libpcap captures for tests.
type pcapWriter struct {
	buf  bytes.Buffer
	link uint32
}

func newPcap(link uint32) *pcapWriter {
	w := &pcapWriter{link: link}
	var h [24]byte
	binary.LittleEndian.PutUint32(h[0:], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(h[4:], 2)
	binary.LittleEndian.PutUint16(h[6:], 4)
	binary.LittleEndian.PutUint32(h[16:], 262144)
	binary.LittleEndian.PutUint32(h[20:], link)
	w.buf.Write(h[:])
	return w
}

func (w *pcapWriter) record(frame []byte) {
	var r [16]byte
	binary.LittleEndian.PutUint32(r[8:], uint32(len(frame)))
	binary.LittleEndian.PutUint32(r[12:], uint32(len(frame)))
	w.buf.Write(r[:])
	w.buf.Write(frame)
}

// tcp adds an IPv4 TCP segment from 10.77.0.src:sport to 10.77.0.dst:dport.
func (w *pcapWriter) tcp(src, dst byte, sport, dport uint16, seq uint32, payload string) {
	tcp := make([]byte, 20+len(payload))
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	tcp[12] = 5 << 4
	copy(tcp[20:], payload)
	w.ip(src, dst, 6, tcp)
}

func (w *pcapWriter) ip(src, dst, proto byte, body []byte) {
	ip := make([]byte, 20, 20+len(body))
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(body)))
	ip[8], ip[9] = 64, proto
	copy(ip[12:], []byte{10, 77, 0, src})
	copy(ip[16:], []byte{10, 77, 0, dst})
	ip = append(ip, body...)
	var frame []byte
	switch w.link {
	case linkEthernet:
		frame = make([]byte, 14)
		binary.BigEndian.PutUint16(frame[12:], 0x0800)
	case linkSLL:
		frame = make([]byte, 16)
		binary.BigEndian.PutUint16(frame[14:], 0x0800)
	case linkSLL2:
		frame = make([]byte, 20)
		binary.BigEndian.PutUint16(frame[0:], 0x0800)
	}
	w.record(append(frame, ip...))
}

func TestPcapReassembly(t *testing.T) {
	for _, link := range []uint32{linkEthernet, linkSLL, linkSLL2, linkRaw} {
		w := newPcap(link)
		var seq uint32 = 0xfffffff0 // the stream wraps around the sequence space
		// "Maternity Ward 3" split over three segments, delivered out of order, one of them twice
		// (as tcpdump -i any sees a bridged frame), and one retransmitted with different bounds.
		w.tcp(11, 12, 4001, 50000, seq+7, "ity W")
		w.tcp(11, 12, 4001, 50000, seq, "xMaterni")
		w.tcp(11, 12, 4001, 50000, seq, "xMaterni")
		w.tcp(11, 12, 4001, 50000, seq+11, "Ward 3 end")
		w.tcp(11, 12, 4001, 50000, seq+100, "after a gap") // not captured: a new run
		w.tcp(12, 11, 50000, 4001, 7, "other direction")
		w.ip(11, 12, 17, []byte("udp is not reassembled"))
		w.buf.Write([]byte{1, 2, 3}) // a truncated last record, as when tcpdump is killed

		packets := 0
		c, err := Pcap(bytes.NewReader(w.buf.Bytes()), func([]byte) { packets++ })
		if err != nil {
			t.Fatalf("link %d: %v", link, err)
		}
		if c.Packets != 7 || packets != 7 {
			t.Errorf("link %d: %d packets, %d callbacks; want 7", link, c.Packets, packets)
		}
		var got []string
		for _, s := range c.Streams {
			for _, r := range s.Runs {
				got = append(got, s.Flow+" "+string(r))
			}
		}
		want := []string{
			"10.77.0.11:4001>10.77.0.12:50000 xMaternity Ward 3 end",
			"10.77.0.11:4001>10.77.0.12:50000 after a gap",
			"10.77.0.12:50000>10.77.0.11:4001 other direction",
		}
		if !slices.Equal(got, want) {
			t.Errorf("link %d: streams\n%s\nwant\n%s", link, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}

func TestPcapRefuses(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":     nil,
		"pcapng":    {0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"bad link":  newPcap(228).buf.Bytes(),
		"huge rec":  append(newPcap(linkEthernet).buf.Bytes(), 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0),
		"short hdr": newPcap(linkEthernet).buf.Bytes()[:10],
	} {
		if _, err := Pcap(bytes.NewReader(b), nil); err == nil {
			t.Errorf("%s: Pcap returned no error", name)
		}
	}
}

// FuzzPcap checks that Pcap never panics, whatever the bytes, and that every run it returns is
// no longer than the payload bytes it read.
func FuzzPcap(f *testing.F) {
	w := newPcap(linkSLL2)
	w.tcp(11, 12, 4001, 50000, 1, "hello")
	w.tcp(11, 12, 4001, 50000, 3, "llo world")
	f.Add(w.buf.Bytes()) // more seeds in testdata/fuzz/FuzzPcap: every link type, big-endian, VLAN, truncated
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Pcap(bytes.NewReader(b), nil)
		if err != nil {
			return
		}
		total := 0
		for _, s := range c.Streams {
			for _, r := range s.Runs {
				total += len(r)
			}
		}
		if total > len(b) {
			t.Errorf("streams hold %d bytes from a %d-byte capture", total, len(b))
		}
	})
}
