package main

import (
	"fmt"
	"testing"
)

func TestParseShifts(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // fmt of the shifts, or "error"
	}{
		{"mon@08:00-16:00", "[{1 480 480}]"},
		{"mon-wed@08:00-16:00", "[{1 480 480} {2 480 480} {3 480 480}]"},
		{"fri-mon@22:00-06:00", "[{5 1320 480} {6 1320 480} {0 1320 480} {1 1320 480}]"},
		{"sat,sun@00:00-24:00", "[{6 0 1440} {0 0 1440}]"},
		{"daily@09:00-09:00", "[{0 540 1440} {1 540 1440} {2 540 1440} {3 540 1440} {4 540 1440} {5 540 1440} {6 540 1440}]"},
		{"monday@08:00-16:00", "[{1 480 480}]"},
		{"mon 08:00-16:00", "error"},
		{"mon@8-16", "error"},
		{"mon@24:00-08:00", "error"},
		{"xyz@08:00-16:00", "error"},
		{"mon@08:60-16:00", "error"},
	} {
		ss, err := parseShifts(tc.in)
		got := fmt.Sprint(ss)
		if err != nil {
			got = "error"
		}
		if got != tc.want {
			t.Errorf("parseShifts(%q) = %s (%v); want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestParseOffset(t *testing.T) {
	for in, want := range map[string]int{"UTC": 0, "+01:00": 60, "-0530": -330, "+2": 120, "+14:00": 840} {
		got, err := parseOffset(in)
		if err != nil || int(got) != want {
			t.Errorf("parseOffset(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"+15:00", "01:00", "+1:0:0", "+ab"} {
		if _, err := parseOffset(in); err == nil {
			t.Errorf("parseOffset(%q) passed", in)
		}
	}
}
