// Package safetext keeps names and message text from misleading the
// reader. Two things can make what is shown differ from what was written:
// bidirectional controls (U+202E RIGHT-TO-LEFT OVERRIDE turns "dose
// 5<RLO>01 mg" into "dose 510 mg" on a screen that honours it) and
// characters that look like others (a Cyrillic "А" in "Аlice").
//
//   - [CheckName] refuses a display or team name that the PRECIS Nickname
//     profile (RFC 8266, golang.org/x/text/secure/precis) refuses (bidi
//     controls, zero-width and other default-ignorable characters,
//     controls) or that mixes scripts within a word (Latin with Cyrillic
//     or Greek letters, the usual confusables). sync/crdt applies it when
//     it decodes names, so a forged name from a peer is refused too.
//
//   - [Display] returns text safe to show: bidi controls and other
//     invisible format characters become visible "<U+202E>" marks, and
//     other control characters (but newline and tab) become U+FFFD. The
//     text reads in the order it was written.
//
//   - [Skeleton] and [LookAlike] tell names that look alike though written
//     differently: a word written entirely in Cyrillic letters that look
//     Latin ("Сора", "Copa"), a one-letter word of another script ("Ward
//     А", "Ward A"), "rn" and "m", case. It is the skeleton of Unicode
//     Technical Standard #39 (section 4, confusable detection; table of
//     github.com/mtibben/confusables, Unicode 13) of the case-folded
//     name. sync/crdt shows a person whose name looks like an earlier
//     person's with its id, and the node refuses to add such a name or to
//     create a team whose name looks like one the device has.
//
// Caveats: the confusables table is Unicode 13's; look-alike names are
// shown apart, not refused, when they meet from two partitions; safety
// numbers identify a person.
package safetext

import (
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/mtibben/confusables"
	"golang.org/x/text/cases"
	"golang.org/x/text/secure/precis"
)

// Skeleton returns the form of a name in which names that look alike are
// equal: the UTS #39 skeleton of s case-folded, with its spaces collapsed.
func Skeleton(s string) string {
	return confusables.Skeleton(cases.Fold().String(strings.Join(strings.Fields(s), " ")))
}

// LookAlike reports whether a and b look alike (equal names do).
func LookAlike(a, b string) bool { return Skeleton(a) == Skeleton(b) }

// ErrName is returned by CheckName for a name that may mislead.
var ErrName = errors.New("safetext: name")

// CheckName reports whether s is a name that shows as what it is.
func CheckName(s string) error {
	if plainASCII(s) {
		return nil // printable ASCII: nothing invisible, one script
	}
	if _, err := precis.Nickname.String(s); err != nil {
		return fmt.Errorf("%w: it holds invisible, control or direction-changing characters", ErrName)
	}
	if mixedScript(s) {
		return fmt.Errorf("%w: a word mixes letters of different scripts (such as Latin and Cyrillic), which can imitate another name", ErrName)
	}
	return nil
}

// NormalizeName returns the PRECIS Nickname form of s (spaces trimmed and
// collapsed, compatibility forms such as full-width letters folded), or
// CheckName's error.
func NormalizeName(s string) (string, error) {
	if err := CheckName(s); err != nil {
		return "", err
	}
	out, err := precis.Nickname.String(s)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrName, err)
	}
	return out, nil
}

// plainASCII reports whether s is non-empty printable ASCII without
// leading or trailing space (which the Nickname profile would trim).
func plainASCII(s string) bool {
	if s == "" || s[0] == ' ' || s[len(s)-1] == ' ' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// common are the scripts tried first (most names are in one of them).
var common = []string{"Latin", "Cyrillic", "Greek", "Arabic", "Hebrew", "Devanagari", "Han", "Hiragana", "Katakana", "Hangul", "Thai", "Ethiopic", "Bengali", "Tamil"}

// scripts that may mix in one word (Japanese and Korean writing).
var compatible = map[string]string{"Han": "CJK", "Hiragana": "CJK", "Katakana": "CJK", "Hangul": "CJK", "Bopomofo": "CJK"}

func scriptOf(r rune) string {
	for _, name := range common {
		if unicode.Is(unicode.Scripts[name], r) {
			if c, ok := compatible[name]; ok {
				return c
			}
			return name
		}
	}
	for name, table := range unicode.Scripts {
		if name == "Common" || name == "Inherited" {
			continue
		}
		if unicode.Is(table, r) {
			if c, ok := compatible[name]; ok {
				return c
			}
			return name
		}
	}
	return ""
}

// mixedScript reports whether a word of s has letters of two scripts.
func mixedScript(s string) bool {
	for _, w := range strings.FieldsFunc(s, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsMark(r) }) {
		first := ""
		for _, r := range w {
			if !unicode.IsLetter(r) {
				continue
			}
			sc := scriptOf(r)
			if sc == "" {
				continue
			}
			if first == "" {
				first = sc
			} else if sc != first {
				return true
			}
		}
	}
	return false
}

// visible reports whether r is shown as itself by Display.
func visible(r rune) bool {
	switch {
	case r == '\n' || r == '\t':
		return true
	case unicode.Is(unicode.Bidi_Control, r):
		return false
	case r == '\u200d' || r == '\u200c':
		return true // joiners: needed by emoji and several scripts, and they do not reorder
	case unicode.Is(unicode.Cf, r):
		return false
	}
	return true
}

// Display returns s with every bidi control and invisible format character
// replaced by a visible "<U+XXXX>" mark, and every other control character
// but newline and tab by U+FFFD.
func Display(s string) string {
	clean := true
	for _, r := range s {
		if !visible(r) || unicode.IsControl(r) && r != '\n' && r != '\t' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case !visible(r):
			fmt.Fprintf(&b, "<U+%04X>", r)
		case unicode.IsControl(r) && r != '\n' && r != '\t':
			b.WriteRune('\uFFFD')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
