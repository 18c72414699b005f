// Package rawid finds raw patient identifiers in message text before it is
// sent, so the sender can be warned and offered a patient reference token
// instead (the guidance is to minimise identifiers: a local case token in
// the message's patient reference, never the NHS number, birth date or
// phone number in the text). It finds:
//
//   - NHS numbers: ten digits, plain or grouped 3-3-4 by spaces or hyphens,
//     whose last digit is the modulus-11 check digit of the first nine
//     (NHS Data Dictionary: weights 10 to 2, check = 11 - sum mod 11, 11
//     reads 0, 10 is never issued). Ten digits that fail the check are not
//     reported: they are not NHS numbers, and reporting them would teach
//     people to ignore the warning.
//   - Dates of birth: a calendar-valid date (d/m/y, d-m-y, d.m.y with a
//     two- or four-digit year, ISO y-m-d, or "12 March 1984") that follows
//     a birth word ("DOB", "born", "birth", "b.") or lies more than a year
//     before now: appointment and review dates (recent or coming) pass.
//   - Phone numbers: 10 to 13 digits starting with 0 or +, with the
//     separators people type (spaces, hyphens, dots, brackets).
//
// Scan is pure and never fails; its false-positive rate on a corpus of
// ordinary clinical sentences is measured by BenchmarkCorpus and checked by
// TestCorpusFalsePositives (testdata/clinical.txt).
package rawid

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Kind is a kind of raw identifier.
type Kind uint8

// Kinds.
const (
	NHSNumber Kind = iota + 1
	DateOfBirth
	Phone
)

// String returns "NHS number", "date of birth" or "phone number".
func (k Kind) String() string {
	switch k {
	case NHSNumber:
		return "NHS number"
	case DateOfBirth:
		return "date of birth"
	case Phone:
		return "phone number"
	}
	return "identifier"
}

// Finding is one raw identifier found: its kind and where it is in the
// text (byte offsets, End exclusive).
type Finding struct {
	Kind       Kind
	Start, End int
}

// Advice is what to tell the sender about a finding.
func (f Finding) Advice() string {
	return "this looks like a " + f.Kind.String() +
		": identify the patient with a reference token in the patient field (for example your clinic's case number), not the raw identifier in the text"
}

// MaxScan bounds the text scanned, in bytes (a message's limit is 16 KiB).
const MaxScan = 64 << 10

// minDigits: the shortest identifier found has four digits (a date such as 1/2/84).
const minDigits = 4

var (
	nhsRe = regexp.MustCompile(`\d{3}([ -]?)\d{3}([ -]?)\d{4}`)
	// phoneRe: an optional +, then digits with separators, 10..13 digits counted after.
	phoneRe = regexp.MustCompile(`\+?\(?\d[\d ()\-.]{8,20}\d`)
	// numeric dates: d/m/y with one separator kind; ISO y-m-d.
	dmyRe = regexp.MustCompile(`(\d{1,2})([/.\-])(\d{1,2})([/.\-])(\d{4}|\d{2})`)
	ymdRe = regexp.MustCompile(`(\d{4})-(\d{1,2})-(\d{1,2})`)
	// textual dates: 12 March 1984, 3rd Feb 1990, March 12, 1984.
	dMonYRe = regexp.MustCompile(`(?i)\b(\d{1,2})(?:st|nd|rd|th)?\s+(jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?,?\s+(\d{4})\b`)
	monDYRe = regexp.MustCompile(`(?i)\b(jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})\b`)
	// birthWord: a birth word just before a date.
	birthWord = regexp.MustCompile(`(?i)(\bd\.?\s?o\.?\s?b\.?|\bborn\b|\bbirth\b|\bbirthday\b|\bb\.)\s*(on|:|-|=)?\s*$`)
)

var months = map[string]time.Month{"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "sept": 9, "oct": 10, "nov": 11, "dec": 12}

// Scan returns the raw identifiers in text, sorted by position, at most one
// per stretch of text (an NHS number is not also reported as a phone
// number). now is the time of sending: dates more than a year before it
// count as birth dates. Text past MaxScan bytes is not scanned.
func Scan(text string, now time.Time) []Finding {
	if len(text) > MaxScan {
		text = text[:MaxScan]
	}
	if len(digitsOf(text)) < minDigits {
		return nil
	}
	var out []Finding
	add := func(f Finding) {
		for _, o := range out {
			if f.Start < o.End && o.Start < f.End {
				return
			}
		}
		out = append(out, f)
	}
	for _, m := range nhsRe.FindAllStringSubmatchIndex(text, -1) {
		s, e := m[0], m[1]
		if m[2] != m[3] && text[m[2]:m[3]] != text[m[4]:m[5]] || m[2] == m[3] && m[4] != m[5] {
			continue // mixed grouping: "943 4765919"
		}
		if digitNear(text, s, e) {
			continue
		}
		if nhsValid(digitsOf(text[s:e])) {
			add(Finding{NHSNumber, s, e})
		}
	}
	dates := func(re *regexp.Regexp, ymd func(sub []string) (y, m, d int, ok bool)) {
		for _, m := range re.FindAllStringSubmatchIndex(text, -1) {
			s, e := m[0], m[1]
			if digitNear(text, s, e) || alnumNear(text, s, e) {
				continue
			}
			sub := make([]string, len(m)/2)
			for i := range sub {
				if m[2*i] >= 0 {
					sub[i] = text[m[2*i]:m[2*i+1]]
				}
			}
			y, mo, d, ok := ymd(sub)
			if !ok {
				continue
			}
			if y < 100 {
				y += 1900
				if y+100 <= now.Year() {
					y += 100
				}
			}
			t := time.Date(y, time.Month(mo), d, 0, 0, 0, 0, time.UTC)
			if t.Year() != y || int(t.Month()) != mo || t.Day() != d || y < 1880 || t.After(now) {
				continue
			}
			if birthBefore(text, s) || t.Before(now.AddDate(-1, 0, 0)) {
				add(Finding{DateOfBirth, s, e})
			}
		}
	}
	dates(dmyRe, func(sub []string) (int, int, int, bool) {
		if sub[2] != sub[4] {
			return 0, 0, 0, false // 12/03-1984
		}
		d, _ := strconv.Atoi(sub[1])
		m, _ := strconv.Atoi(sub[3])
		y, _ := strconv.Atoi(sub[5])
		return y, m, d, true
	})
	dates(ymdRe, func(sub []string) (int, int, int, bool) {
		y, _ := strconv.Atoi(sub[1])
		m, _ := strconv.Atoi(sub[2])
		d, _ := strconv.Atoi(sub[3])
		return y, m, d, true
	})
	dates(dMonYRe, func(sub []string) (int, int, int, bool) {
		d, _ := strconv.Atoi(sub[1])
		y, _ := strconv.Atoi(sub[3])
		return y, int(months[strings.ToLower(sub[2])]), d, true
	})
	dates(monDYRe, func(sub []string) (int, int, int, bool) {
		d, _ := strconv.Atoi(sub[2])
		y, _ := strconv.Atoi(sub[3])
		return y, int(months[strings.ToLower(sub[1])]), d, true
	})
	for _, m := range phoneRe.FindAllStringIndex(text, -1) {
		s, e := m[0], m[1]
		if digitNear(text, s, e) {
			continue
		}
		raw := text[s:e]
		ds := digitsOf(raw)
		lead := strings.TrimLeft(raw, "(")
		if len(ds) < 10 || len(ds) > 13 || !(strings.HasPrefix(lead, "+") || strings.HasPrefix(lead, "0")) {
			continue
		}
		if strings.Count(raw, "(") != strings.Count(raw, ")") || strings.Contains(raw, "..") || strings.Contains(raw, "  ") {
			continue
		}
		add(Finding{Phone, s, e})
	}
	slices.SortFunc(out, func(a, b Finding) int { return a.Start - b.Start })
	return out
}

// nhsValid reports whether ten digits carry a valid modulus-11 check digit.
func nhsValid(ds string) bool {
	if len(ds) != 10 {
		return false
	}
	sum := 0
	for i := range 9 {
		sum += int(ds[i]-'0') * (10 - i)
	}
	check := 11 - sum%11
	switch check {
	case 11:
		check = 0
	case 10:
		return false
	}
	return int(ds[9]-'0') == check
}

// NHSValid reports whether s, with spaces and hyphens removed, is ten
// digits with a valid NHS modulus-11 check digit.
func NHSValid(s string) bool {
	s = strings.NewReplacer(" ", "", "-", "").Replace(s)
	return len(digitsOf(s)) == len(s) && nhsValid(s)
}

func digitsOf(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// digitNear reports whether the match [s, e) continues into more digits
// (directly or across one separator), so it is part of a longer number.
func digitNear(text string, s, e int) bool {
	if s > 0 && (isDigit(text[s-1]) || s > 1 && strings.IndexByte("/.-", text[s-1]) >= 0 && isDigit(text[s-2])) {
		return true
	}
	return e < len(text) && (isDigit(text[e]) || e+1 < len(text) && strings.IndexByte("/.-", text[e]) >= 0 && isDigit(text[e+1]))
}

func alnumNear(text string, s, e int) bool {
	isAlnum := func(c byte) bool { return isDigit(c) || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	return s > 0 && isAlnum(text[s-1]) || e < len(text) && isAlnum(text[e])
}

// birthBefore reports whether a birth word ends just before offset s.
func birthBefore(text string, s int) bool {
	from := max(0, s-16)
	return birthWord.MatchString(text[from:s])
}
