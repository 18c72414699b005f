package chaos

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Link-layer header types of the capture formats Pcap reads (tcpdump.org/linktypes.html).
const (
	linkEthernet = 1   // LINKTYPE_ETHERNET
	linkRaw      = 101 // LINKTYPE_RAW: IPv4 or IPv6, no link header
	linkSLL      = 113 // LINKTYPE_LINUX_SLL: tcpdump -i any, libpcap < 1.10
	linkSLL2     = 276 // LINKTYPE_LINUX_SLL2: tcpdump -i any, libpcap >= 1.10
)

// Pcap limits: a capture larger than maxPcap, or a record larger than maxPcapRecord, is refused
// before anything is allocated for it.
const (
	maxPcap       = 4 << 30
	maxPcapRecord = 1 << 18
)

// A Capture is what Pcap read from a libpcap capture file: every packet's bytes, and the TCP
// payload of every IPv4 flow reassembled by sequence number.
type Capture struct {
	Packets int
	// Bytes is the size of the capture file.
	Bytes int64
	// Streams holds each TCP flow's payload as contiguous runs: a gap in the sequence space (a
	// segment that was not captured) starts a new run. Segments seen twice (tcpdump -i any sees a
	// bridged frame on its way in and on its way out; TCP retransmits) are kept once.
	Streams []Stream
}

// A Stream is one direction of one TCP connection.
type Stream struct {
	Flow string // "10.77.0.11:4001>10.77.0.12:40112"
	Runs [][]byte
}

// segment is a TCP payload at its offset from the first sequence number seen in its flow.
type segment struct {
	off  int64
	data []byte
}

// Pcap reads a classic libpcap capture (not pcapng), as written by tcpdump -w, calling packet with
// the raw bytes of every record (the link header included), and reassembles the TCP payloads of
// IPv4 packets. It refuses a damaged file with an error and never panics; a truncated last record
// (tcpdump killed mid-write) ends the capture without error.
func Pcap(r io.Reader, packet func(b []byte)) (*Capture, error) {
	var hdr [24]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("chaos: pcap header: %w", err)
	}
	var bo binary.ByteOrder
	switch binary.LittleEndian.Uint32(hdr[:]) {
	case 0xa1b2c3d4, 0xa1b23c4d:
		bo = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		bo = binary.BigEndian
	default:
		return nil, errors.New("chaos: not a libpcap capture (bad magic; pcapng is not supported)")
	}
	link := bo.Uint32(hdr[20:]) & 0x0fffffff
	switch link {
	case linkEthernet, linkRaw, linkSLL, linkSLL2:
	default:
		return nil, fmt.Errorf("chaos: pcap link type %d is not supported", link)
	}
	c := &Capture{Bytes: 24}
	flows := map[string][]segment{}
	first := map[string]uint32{}
	var order []string
	var rec [16]byte
	for {
		if _, err := io.ReadFull(r, rec[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			return nil, fmt.Errorf("chaos: pcap record: %w", err)
		}
		n := bo.Uint32(rec[8:])
		if n > maxPcapRecord {
			return nil, fmt.Errorf("chaos: pcap record %d is %d bytes; the limit is %d", c.Packets, n, maxPcapRecord)
		}
		if c.Bytes+16+int64(n) > maxPcap {
			return nil, fmt.Errorf("chaos: pcap larger than %d bytes", int64(maxPcap))
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("chaos: pcap record %d: %w", c.Packets, err)
		}
		c.Packets++
		c.Bytes += 16 + int64(n)
		if packet != nil {
			packet(b)
		}
		flow, seq, payload, ok := tcpPayload(link, b)
		if !ok || len(payload) == 0 {
			continue
		}
		base, seen := first[flow]
		if !seen {
			first[flow] = seq
			base = seq
			order = append(order, flow)
		}
		// Offsets are relative to the first segment seen, which need not be the lowest: a
		// reordered or retransmitted earlier segment gets a negative offset (int32 of the
		// sequence difference handles wraparound).
		flows[flow] = append(flows[flow], segment{off: int64(int32(seq - base)), data: payload})
	}
	for _, flow := range order {
		c.Streams = append(c.Streams, Stream{Flow: flow, Runs: reassemble(flows[flow])})
	}
	return c, nil
}

// reassemble orders segments by offset and joins them into contiguous runs, keeping the bytes of
// overlapping segments once.
func reassemble(segs []segment) [][]byte {
	slices.SortStableFunc(segs, func(a, b segment) int {
		switch {
		case a.off < b.off:
			return -1
		case a.off > b.off:
			return 1
		}
		return 0
	})
	var runs [][]byte
	var cur []byte
	var end int64 // offset just past cur
	for _, s := range segs {
		switch {
		case cur == nil || s.off > end:
			if cur != nil {
				runs = append(runs, cur)
			}
			cur = append([]byte(nil), s.data...)
			end = s.off + int64(len(s.data))
		case s.off+int64(len(s.data)) > end:
			cur = append(cur, s.data[end-s.off:]...)
			end = s.off + int64(len(s.data))
		}
	}
	if cur != nil {
		runs = append(runs, cur)
	}
	return runs
}

// tcpPayload finds the IPv4 TCP payload of a captured frame: its flow name, sequence number and
// payload. ok is false for anything else (ARP, IPv6, UDP, fragments, truncated headers).
func tcpPayload(link uint32, b []byte) (flow string, seq uint32, payload []byte, ok bool) {
	var proto uint16
	switch link {
	case linkEthernet:
		if len(b) < 14 {
			return "", 0, nil, false
		}
		proto, b = binary.BigEndian.Uint16(b[12:]), b[14:]
		for proto == 0x8100 || proto == 0x88a8 { // VLAN tags
			if len(b) < 4 {
				return "", 0, nil, false
			}
			proto, b = binary.BigEndian.Uint16(b[2:]), b[4:]
		}
	case linkSLL:
		if len(b) < 16 {
			return "", 0, nil, false
		}
		proto, b = binary.BigEndian.Uint16(b[14:]), b[16:]
	case linkSLL2:
		if len(b) < 20 {
			return "", 0, nil, false
		}
		proto, b = binary.BigEndian.Uint16(b[0:]), b[20:]
	case linkRaw:
		proto = 0x0800
	}
	if proto != 0x0800 || len(b) < 20 || b[0]>>4 != 4 {
		return "", 0, nil, false
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:]))
	fragment := binary.BigEndian.Uint16(b[6:]) & 0x3fff // more-fragments flag and offset
	if ihl < 20 || total < ihl || b[9] != 6 || fragment != 0 {
		return "", 0, nil, false
	}
	total = min(total, len(b)) // a capture shorter than the packet (snap length)
	if total < ihl+20 {
		return "", 0, nil, false
	}
	src, dst := b[12:16], b[16:20]
	tcp := b[ihl:total]
	off := int(tcp[12]>>4) * 4
	if off < 20 || off > len(tcp) {
		return "", 0, nil, false
	}
	flow = fmt.Sprintf("%d.%d.%d.%d:%d>%d.%d.%d.%d:%d", src[0], src[1], src[2], src[3],
		binary.BigEndian.Uint16(tcp[0:]), dst[0], dst[1], dst[2], dst[3], binary.BigEndian.Uint16(tcp[2:]))
	return flow, binary.BigEndian.Uint32(tcp[4:]), tcp[off:], true
}
