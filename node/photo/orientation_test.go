package photo

import (
	"bytes"
	"encoding/binary"
	"image"
	"image/color"
	"image/jpeg"
	"testing"
)

// orientationAPP1 builds an APP1 Exif segment whose IFD0 holds a Make and the Orientation o, in
// big-endian ("MM") or little-endian ("II") byte order.
func orientationAPP1(o uint16, bigEndian bool) []byte {
	var bo interface {
		AppendUint16([]byte, uint16) []byte
		AppendUint32([]byte, uint32) []byte
	} = binary.LittleEndian
	t := []byte{'I', 'I'}
	if bigEndian {
		bo, t = binary.BigEndian, []byte{'M', 'M'}
	}
	t = bo.AppendUint16(t, 42)
	t = bo.AppendUint32(t, 8)
	t = bo.AppendUint16(t, 2)
	// Make (ASCII, 4 bytes: in the value field), then Orientation (SHORT, 1).
	t = bo.AppendUint16(t, 0x010f)
	t = bo.AppendUint16(t, 2)
	t = bo.AppendUint32(t, 4)
	t = append(t, 'C', 'a', 'm', 0)
	t = bo.AppendUint16(t, 0x0112)
	t = bo.AppendUint16(t, 3)
	t = bo.AppendUint32(t, 1)
	t = bo.AppendUint16(t, o)
	t = append(t, 0, 0)
	t = bo.AppendUint32(t, 0)
	seg := append([]byte("Exif\x00\x00"), t...)
	return append([]byte{0xff, 0xe1, byte((len(seg) + 2) >> 8), byte(len(seg) + 2)}, seg...)
}

// quadrants draws a w × h image in four flat quadrants: top-left, top-right, bottom-left,
// bottom-right.
func quadrants(w, h int, tl, tr, bl, br color.RGBA) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := map[[2]bool]color.RGBA{{false, false}: tl, {true, false}: tr, {false, true}: bl, {true, true}: br}[[2]bool{x >= w/2, y >= h/2}]
			img.SetRGBA(x, y, c)
		}
	}
	return img
}

// TestReencodeAppliesOrientation: for each EXIF orientation, a camera file stored as that tag says
// (the pixels turned or mirrored, the tag telling how to show them) comes out of Reencode upright:
// 60 × 40 with red top-left, green top-right, blue bottom-left, yellow bottom-right; and with no
// EXIF segment left.
func TestReencodeAppliesOrientation(t *testing.T) {
	r, g, b, y := color.RGBA{220, 20, 20, 255}, color.RGBA{20, 200, 20, 255}, color.RGBA{20, 20, 220, 255}, color.RGBA{230, 230, 20, 255}
	// How each orientation's camera stores the upright picture: its size and its quadrants.
	stored := []struct {
		o              uint16
		w, h           int
		tl, tr, bl, br color.RGBA
	}{
		{1, 60, 40, r, g, b, y},
		{2, 60, 40, g, r, y, b}, // mirrored left-right
		{3, 60, 40, y, b, g, r}, // turned 180°
		{4, 60, 40, b, y, r, g}, // mirrored top-bottom
		{5, 40, 60, r, b, g, y}, // transposed
		{6, 40, 60, g, y, r, b}, // turned 90° anticlockwise: shown turned 90° clockwise
		{7, 40, 60, y, g, b, r}, // transversed
		{8, 40, 60, b, r, y, g}, // turned 90° clockwise: shown turned 90° anticlockwise
	}
	for _, s := range stored {
		var raw bytes.Buffer
		if err := jpeg.Encode(&raw, quadrants(s.w, s.h, s.tl, s.tr, s.bl, s.br), &jpeg.Options{Quality: 95}); err != nil {
			t.Fatal(err)
		}
		in := withSegment(raw.Bytes(), orientationAPP1(s.o, s.o%2 == 0))
		if got := Orientation(in); got != int(s.o) {
			t.Errorf("orientation %d: Orientation = %d", s.o, got)
		}
		out, err := Reencode(in)
		if err != nil {
			t.Fatalf("orientation %d: %v", s.o, err)
		}
		for _, m := range segments(t, out) {
			if m == 0xe1 {
				t.Errorf("orientation %d: an APP1 segment in the output", s.o)
			}
		}
		img, err := jpeg.Decode(bytes.NewReader(out))
		if err != nil {
			t.Fatal(err)
		}
		if bd := img.Bounds(); bd.Dx() != 60 || bd.Dy() != 40 {
			t.Errorf("orientation %d: output %d × %d; want 60 × 40", s.o, bd.Dx(), bd.Dy())
			continue
		}
		for _, q := range []struct {
			name string
			x, y int
			want color.RGBA
		}{{"top-left", 15, 10, r}, {"top-right", 45, 10, g}, {"bottom-left", 15, 30, b}, {"bottom-right", 45, 30, y}} {
			cr, cg, cb, _ := img.At(q.x, q.y).RGBA()
			if d := absDiff(cr>>8, q.want.R) + absDiff(cg>>8, q.want.G) + absDiff(cb>>8, q.want.B); d > 60 {
				t.Errorf("orientation %d: %s is (%d,%d,%d); want %v", s.o, q.name, cr>>8, cg>>8, cb>>8, q.want)
			}
		}
	}
}

func absDiff(a uint32, b uint8) uint32 {
	if a > uint32(b) {
		return a - uint32(b)
	}
	return uint32(b) - a
}

func TestOrientationIgnoresBadInput(t *testing.T) {
	var raw bytes.Buffer
	if err := jpeg.Encode(&raw, quadrants(8, 8, color.RGBA{}, color.RGBA{}, color.RGBA{}, color.RGBA{}), nil); err != nil {
		t.Fatal(err)
	}
	good := withSegment(raw.Bytes(), orientationAPP1(6, true))
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"no EXIF", raw.Bytes()},
		{"out of range", withSegment(raw.Bytes(), orientationAPP1(9, false))},
		{"zero", withSegment(raw.Bytes(), orientationAPP1(0, true))},
		{"truncated in the segment", good[:30]},
		{"not a JPEG", []byte("GIF89a")},
		{"empty", nil},
		{"EXIF after the image data", append(append([]byte{}, raw.Bytes()...), orientationAPP1(6, true)...)},
		{"bad byte order", bytes.Replace(good, []byte("MM\x00\x2a"), []byte("XX\x00\x2a"), 1)},
	} {
		if got := Orientation(c.data); got != 1 {
			t.Errorf("%s: Orientation = %d; want 1", c.name, got)
		}
	}
}

// FuzzOrientation: no input makes the EXIF parser panic or return anything but 1 to 8.
func FuzzOrientation(f *testing.F) {
	var raw bytes.Buffer
	_ = jpeg.Encode(&raw, quadrants(8, 8, color.RGBA{}, color.RGBA{}, color.RGBA{}, color.RGBA{}), nil)
	for o := uint16(1); o <= 8; o++ {
		f.Add(withSegment(raw.Bytes(), orientationAPP1(o, o%2 == 0))[:200])
	}
	f.Add(withSegment(raw.Bytes(), exifAPP1("d", "m"))[:300])
	f.Fuzz(func(t *testing.T, b []byte) {
		if o := Orientation(b); o < 1 || o > 8 {
			t.Fatalf("Orientation = %d", o)
		}
	})
}
