package rawid

import (
	"bufio"
	"os"
	"strings"
	"testing"
	"time"
)

// now is the time of sending in these tests.
var now = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

func kinds(fs []Finding, text string) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Kind.String()+"="+text[f.Start:f.End])
	}
	return out
}

func TestScan(t *testing.T) {
	for _, tc := range []struct {
		text string
		want []string
	}{
		// NHS numbers: valid check digits, in the groupings people type.
		{"NHS 943 476 5919 seen today", []string{"NHS number=943 476 5919"}},
		{"nhs no 9434765919", []string{"NHS number=9434765919"}},
		{"ref 943-476-5919.", []string{"NHS number=943-476-5919"}},
		{"401 023 2137 and 943 476 5919", []string{"NHS number=401 023 2137", "NHS number=943 476 5919"}},
		{"check digit 0: 450 557 7100", nil}, // sum 235 = 11*21+4: check 7, so 0 is wrong
		// Invalid check digits, a check digit of 10, mixed grouping, longer numbers.
		{"943 476 5918", nil},
		{"1000000010", nil},
		{"1000000011", nil},
		{"943 4765919", nil},
		{"94347659190", nil},
		{"lab no 19434765919", nil},
		// Dates of birth: after a birth word, or more than a year ago.
		{"DOB 12/03/1984", []string{"date of birth=12/03/1984"}},
		{"d.o.b: 1/2/84", []string{"date of birth=1/2/84"}},
		{"born 1990-07-15 in Leeds", []string{"date of birth=1990-07-15"}},
		{"her birthday is 3rd March 2001", []string{"date of birth=3rd March 2001"}},
		{"seen with mum, 12 Mar 1984", []string{"date of birth=12 Mar 1984"}},
		{"March 12, 1984 is when", []string{"date of birth=March 12, 1984"}},
		{"12.03.1984", []string{"date of birth=12.03.1984"}},
		{"DOB 05/11/25", []string{"date of birth=05/11/25"}},
		// Not dates of birth: appointments, invalid dates, mixed separators, scores, ratios.
		{"review on 14/12/2026", nil},
		{"clinic 20/01/2027", nil},
		{"bloods on 18.12.2026", nil},
		{"seen 01/12/2026", nil},
		{"DOB 31/02/1984", nil},
		{"12/13/1984", nil},
		{"12/03-1984", nil},
		{"BP 142/88/90", nil},
		{"pain 8/10", nil},
		{"DOB 12/03/2030", nil}, // in the future
		// Phone numbers.
		{"call 07700 900123", []string{"phone number=07700 900123"}},
		{"ring +44 7700 900123 after 5", []string{"phone number=+44 7700 900123"}},
		{"landline (0113) 496 0000", []string{"phone number=(0113) 496 0000"}},
		{"0161-496-0000", []string{"phone number=0161-496-0000"}},
		{"mobile 07700900123.", []string{"phone number=07700900123"}},
		// Not phone numbers: short, no leading 0 or +, doses and times.
		{"bleep 4567", nil},
		{"0800 123", nil},
		{"1.2 L in 24 hours", nil},
		{"08:30 to 12:30", nil},
		{"room 1234 567 890", nil},
	} {
		got := kinds(Scan(tc.text, now), tc.text)
		if strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("Scan(%q) = %q; want %q", tc.text, got, tc.want)
		}
	}
}

func TestNHSValid(t *testing.T) {
	for s, want := range map[string]bool{
		"943 476 5919": true, "9434765919": true, "401-023-2137": true,
		"943 476 5918": false, "1000000010": false, "943476591": false, "94347659a9": false,
	} {
		if got := NHSValid(s); got != want {
			t.Errorf("NHSValid(%q) = %v; want %v", s, got, want)
		}
	}
}

func TestScanBoundedAndNeverPanics(t *testing.T) {
	long := strings.Repeat("9", MaxScan+100) + " 943 476 5919"
	if fs := Scan(long, now); len(fs) != 0 {
		t.Errorf("text past MaxScan was scanned: %v", fs)
	}
	for _, s := range []string{"", "/", "0", "+", "(", "DOB", "1/1/", "\xff\xfe943 476 5919"} {
		Scan(s, now)
	}
}

func FuzzScan(f *testing.F) {
	f.Add("DOB 12/03/1984 NHS 943 476 5919 call 07700 900123")
	f.Add("(0113) 496 0000")
	f.Fuzz(func(t *testing.T, s string) {
		for _, fd := range Scan(s, now) {
			if fd.Start < 0 || fd.End > len(s) || fd.Start >= fd.End {
				t.Fatalf("finding %+v out of range in %q", fd, s)
			}
		}
	})
}

// corpus reads the ordinary clinical sentences of testdata/clinical.txt.
func corpus(tb testing.TB) []string {
	f, err := os.Open("testdata/clinical.txt")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

// falsePositives returns the sentences of the corpus on which Scan reports
// anything.
func falsePositives(lines []string) []string {
	var out []string
	for _, l := range lines {
		if fs := Scan(l, now); len(fs) > 0 {
			out = append(out, strings.Join(kinds(fs, l), ", ")+" in: "+l)
		}
	}
	return out
}

// TestCorpusFalsePositives prints the false-positive rate on the corpus
// and fails above 1%: a warning that cries wolf is ignored.
func TestCorpusFalsePositives(t *testing.T) {
	lines := corpus(t)
	if len(lines) < 200 {
		t.Fatalf("corpus of %d sentences; want 200 or more", len(lines))
	}
	fp := falsePositives(lines)
	rate := float64(len(fp)) / float64(len(lines))
	t.Logf("false positives: %d of %d ordinary clinical sentences (%.2f%%)", len(fp), len(lines), 100*rate)
	for _, l := range fp {
		t.Logf("  %s", l)
	}
	if rate > 0.01 {
		t.Errorf("false-positive rate %.2f%%; want at most 1%%", 100*rate)
	}
}

// BenchmarkCorpus scans the corpus and reports the false-positive rate and
// the cost per sentence.
func BenchmarkCorpus(b *testing.B) {
	lines := corpus(b)
	b.ResetTimer()
	for range b.N {
		for _, l := range lines {
			Scan(l, now)
		}
	}
	b.StopTimer()
	fp := falsePositives(lines)
	b.ReportMetric(100*float64(len(fp))/float64(len(lines)), "fp_%")
	b.ReportMetric(float64(len(lines)), "sentences")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(lines)), "ns/sentence")
}
