package storage

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

func readUsage(t *testing.T, s *Store, from, to uint32) map[UsageKey]UsageCount {
	t.Helper()
	got := make(map[UsageKey]UsageCount)
	if err := s.Usage(from, to, func(k UsageKey, c UsageCount) error {
		if _, dup := got[k]; dup {
			t.Errorf("key %+v listed twice", k)
		}
		got[k] = c
		return nil
	}); err != nil {
		t.Fatalf("Usage: %v", err)
	}
	return got
}

func TestAddUsageMergesAndSurvivesReopen(t *testing.T) {
	s, dir := newStore(t)
	wire := UsageKey{Day: 20250314, Protocol: "/meshsub/1.2.0", Peer: "peer-a"}
	team := UsageKey{Day: 20250314, Topic: topic(7), Protocol: "gossip"}
	other := UsageKey{Day: 20250315, Protocol: "/meshsub/1.2.0"}
	if err := s.AddUsage(map[UsageKey]UsageCount{wire: {Sent: 10, Received: 20}, team: {Sent: 1}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.AddUsage(map[UsageKey]UsageCount{wire: {Sent: 5, Received: 7}, other: {Received: 3}}, nil); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, dir)
	want := map[UsageKey]UsageCount{
		wire:  {Sent: 15, Received: 27},
		team:  {Sent: 1},
		other: {Received: 3},
	}
	if got := readUsage(t, s, 20250301, 20250331); !reflect.DeepEqual(got, want) {
		t.Errorf("got %v; want %v", got, want)
	}
	// A range of one day sees only that day.
	if got := readUsage(t, s, 20250315, 20250315); !reflect.DeepEqual(got, map[UsageKey]UsageCount{other: {Received: 3}}) {
		t.Errorf("one day: got %v", got)
	}
	if got := readUsage(t, s, 20250401, 20250430); len(got) != 0 {
		t.Errorf("April: got %v; want nothing", got)
	}
	if got := readUsage(t, s, 20250316, 20250314); len(got) != 0 {
		t.Errorf("empty range: got %v; want nothing", got)
	}
}

func TestAddUsageFoldsAtomically(t *testing.T) {
	s, _ := newStore(t)
	a := UsageKey{Day: 20250314, Protocol: "p", Peer: "a"}
	rest := UsageKey{Day: 20250314, Protocol: "p"}
	if err := s.AddUsage(map[UsageKey]UsageCount{a: {Sent: 4, Received: 4}, rest: {Sent: 1}}, nil); err != nil {
		t.Fatal(err)
	}
	// Fold a into rest: remove it and add its count to rest, in one call.
	if err := s.AddUsage(map[UsageKey]UsageCount{rest: {Sent: 4, Received: 4}}, []UsageKey{a}); err != nil {
		t.Fatal(err)
	}
	want := map[UsageKey]UsageCount{rest: {Sent: 5, Received: 4}}
	if got := readUsage(t, s, 0, math.MaxUint32); !reflect.DeepEqual(got, want) {
		t.Errorf("got %v; want %v", got, want)
	}
}

func TestAddUsageSaturates(t *testing.T) {
	s, _ := newStore(t)
	k := UsageKey{Day: 1, Protocol: "p"}
	for range 2 {
		if err := s.AddUsage(map[UsageKey]UsageCount{k: {Sent: math.MaxUint64 - 1, Received: 1}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if got := readUsage(t, s, 1, 1)[k]; got != (UsageCount{Sent: math.MaxUint64, Received: 2}) {
		t.Errorf("got %+v; want Sent saturated at MaxUint64, Received 2", got)
	}
}

func TestAddUsageRefusesLongKeys(t *testing.T) {
	s, _ := newStore(t)
	good := UsageKey{Day: 1, Protocol: "p"}
	for _, k := range []UsageKey{
		{Day: 1, Protocol: strings.Repeat("p", MaxUsageProtocolLen+1)},
		{Day: 1, Peer: strings.Repeat("x", MaxUsagePeerLen+1)},
	} {
		err := s.AddUsage(map[UsageKey]UsageCount{good: {Sent: 1}, k: {Sent: 1}}, nil)
		if !errors.Is(err, ErrBadKey) {
			t.Errorf("AddUsage(%d-byte protocol, %d-byte peer) = %v; want ErrBadKey", len(k.Protocol), len(k.Peer), err)
		}
		if err := s.AddUsage(nil, []UsageKey{k}); !errors.Is(err, ErrBadKey) {
			t.Errorf("remove of a too-long key = %v; want ErrBadKey", err)
		}
	}
	if got := readUsage(t, s, 0, math.MaxUint32); len(got) != 0 {
		t.Errorf("a refused call wrote %v", got)
	}
	// The limits themselves are fine, and round-trip.
	edge := UsageKey{Day: 2, Protocol: strings.Repeat("p", MaxUsageProtocolLen), Peer: strings.Repeat("x", MaxUsagePeerLen)}
	if err := s.AddUsage(map[UsageKey]UsageCount{edge: {Sent: 1}}, nil); err != nil {
		t.Fatal(err)
	}
	if got := readUsage(t, s, 2, 2); got[edge] != (UsageCount{Sent: 1}) {
		t.Errorf("edge key: got %v", got)
	}
}

func TestDeleteUsageBefore(t *testing.T) {
	s, _ := newStore(t)
	add := map[UsageKey]UsageCount{}
	for _, d := range []uint32{20240101, 20240102, 20250101, 20250102} {
		add[UsageKey{Day: d, Protocol: "p"}] = UsageCount{Sent: 1}
		add[UsageKey{Day: d, Topic: topic(1), Protocol: "gossip"}] = UsageCount{Sent: 1}
	}
	if err := s.AddUsage(add, nil); err != nil {
		t.Fatal(err)
	}
	n, err := s.DeleteUsageBefore(20250101)
	if err != nil || n != 4 {
		t.Fatalf("DeleteUsageBefore = %d, %v; want 4, nil", n, err)
	}
	got := readUsage(t, s, 0, math.MaxUint32)
	if len(got) != 4 {
		t.Fatalf("%d keys left; want 4", len(got))
	}
	for k := range got {
		if k.Day < 20250101 {
			t.Errorf("day %d survived", k.Day)
		}
	}
}

func TestUsageKeyEncoding(t *testing.T) {
	for _, k := range []UsageKey{
		{},
		{Day: 20250314, Topic: topic(3), Protocol: "/fieldmesh/sync/2.0.0", Peer: "\x00\x24\x08\x01"},
		{Day: math.MaxUint32, Protocol: strings.Repeat("p", 200)[:MaxUsageProtocolLen]},
	} {
		b := usageKey(k)
		got, ok := parseUsageKey(b)
		if !ok || got != k {
			t.Errorf("parse(usageKey(%+v)) = %+v, %v", k, got, ok)
		}
	}
	for _, b := range [][]byte{
		nil,
		{prefixUsage},
		append(usageKey(UsageKey{})[:usageFixedLen], 0x80, 0x00), // non-minimal varint
		append(usageKey(UsageKey{})[:usageFixedLen], 5, 'a'),     // protocol longer than the rest
		append(usageKey(UsageKey{})[:usageFixedLen], 0x81, 0x01), // protocol length above the limit
		append(append(usageKey(UsageKey{})[:usageFixedLen], 0), bytes.Repeat([]byte("x"), MaxUsagePeerLen+1)...),
	} {
		if k, ok := parseUsageKey(b); ok {
			t.Errorf("parseUsageKey(%x) = %+v, true; want refusal", b, k)
		}
	}
}

func FuzzParseUsageKey(f *testing.F) {
	f.Add(usageKey(UsageKey{Day: 20250314, Topic: topic(1), Protocol: "/meshsub/1.2.0", Peer: "peer"}))
	f.Add(usageKey(UsageKey{}))
	f.Add([]byte{prefixUsage, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		k, ok := parseUsageKey(b)
		if !ok {
			return
		}
		if err := k.validate(); err != nil {
			t.Fatalf("parsed key breaks the limits: %v", err)
		}
		if got := usageKey(k); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding differs:\ngot  %x\nwant %x", got, b)
		}
	})
}

func TestOutboxOrderDeleteAndReopen(t *testing.T) {
	s, dir := newStore(t)
	keys := []OutboxKey{{Time: 30, ID: opID(1)}, {Time: 10, ID: opID(2)}, {Time: 20, ID: opID(3)}}
	for i, k := range keys {
		if err := s.PutOutbox(k, []byte{byte(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutOutbox(OutboxKey{}, nil); !errors.Is(err, ErrBadKey) {
		t.Errorf("empty outbox value: %v; want ErrBadKey", err)
	}
	s = reopen(t, s, dir)
	var got []uint64
	var vals []byte
	if err := s.Outbox(func(k OutboxKey, v []byte) error {
		got = append(got, k.Time)
		vals = append(vals, v...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []uint64{10, 20, 30}) || !bytes.Equal(vals, []byte{2, 3, 1}) {
		t.Errorf("outbox order %v values %v; want [10 20 30] [2 3 1]", got, vals)
	}
	// Deleting while iterating is allowed; deleting a missing key is not an error.
	if err := s.Outbox(func(k OutboxKey, _ []byte) error { return s.DeleteOutbox(k) }); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteOutbox(keys[0]); err != nil {
		t.Fatal(err)
	}
	if n, err := s.OutboxLen(); err != nil || n != 0 {
		t.Errorf("OutboxLen = %d, %v; want 0", n, err)
	}
	stop := errors.New("stop")
	_ = s.PutOutbox(keys[0], []byte{1})
	_ = s.PutOutbox(keys[1], []byte{1})
	calls := 0
	if err := s.Outbox(func(OutboxKey, []byte) error { calls++; return stop }); err != stop || calls != 1 {
		t.Errorf("Outbox stopping early: %v after %d calls; want the callback's error after 1", err, calls)
	}
}

func TestSettings(t *testing.T) {
	s, dir := newStore(t)
	if _, err := s.Setting("low-data"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing setting: %v; want ErrNotFound", err)
	}
	if err := s.PutSetting("low-data", []byte{1}); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, dir)
	if v, err := s.Setting("low-data"); err != nil || !bytes.Equal(v, []byte{1}) {
		t.Errorf("Setting = %x, %v; want 01", v, err)
	}
	if err := s.PutSetting("", nil); !errors.Is(err, ErrBadKey) {
		t.Errorf("empty name: %v; want ErrBadKey", err)
	}
}

func TestUsageClosed(t *testing.T) {
	s, _ := newStore(t)
	s.Close()
	for name, err := range map[string]error{
		"AddUsage":          s.AddUsage(map[UsageKey]UsageCount{{Day: 1}: {Sent: 1}}, nil),
		"Usage":             s.Usage(0, 1, func(UsageKey, UsageCount) error { return nil }),
		"DeleteUsageBefore": second(s.DeleteUsageBefore(1)),
		"PutOutbox":         s.PutOutbox(OutboxKey{}, []byte{1}),
		"DeleteOutbox":      s.DeleteOutbox(OutboxKey{}),
		"Outbox":            s.Outbox(func(OutboxKey, []byte) error { return nil }),
		"OutboxLen":         second(s.OutboxLen()),
		"PutSetting":        s.PutSetting("x", nil),
		"Setting":           second(s.Setting("x")),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s on a closed store: %v; want ErrClosed", name, err)
		}
	}
}

// TestUsageRangeStopAndCorrupt: Usage lists only the days asked for, hands back the callback's error
// as it is after one call, and reports a malformed stored key as ErrCorrupt.
func TestUsageRangeStopAndCorrupt(t *testing.T) {
	s, _ := newStore(t)
	add := make(map[UsageKey]UsageCount)
	for d := uint32(20250301); d <= 20250303; d++ {
		add[UsageKey{Day: d, Protocol: "p"}] = UsageCount{Sent: uint64(d)}
	}
	if err := s.AddUsage(add, nil); err != nil {
		t.Fatal(err)
	}
	want := map[UsageKey]UsageCount{{Day: 20250302, Protocol: "p"}: {Sent: 20250302}}
	if got := readUsage(t, s, 20250302, 20250302); !reflect.DeepEqual(got, want) {
		t.Errorf("Usage of one day = %v; want %v", got, want)
	}
	if got := readUsage(t, s, 20250303, 20250302); len(got) != 0 {
		t.Errorf("Usage of an empty range = %v; want nothing", got)
	}
	stop := errors.New("stop")
	calls := 0
	if err := s.Usage(0, math.MaxUint32, func(UsageKey, UsageCount) error { calls++; return stop }); err != stop || calls != 1 {
		t.Errorf("Usage stopping early: %v after %d calls; want the callback's error after 1", err, calls)
	}
	if err := s.put("usage", []byte{prefixUsage, 0, 0, 0, 1}, make([]byte, usageValueLen)); err != nil {
		t.Fatal(err)
	}
	if err := s.Usage(0, math.MaxUint32, func(UsageKey, UsageCount) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Usage over a malformed key: %v; want ErrCorrupt", err)
	}
}
