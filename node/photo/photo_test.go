package photo

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math/rand/v2"
	"testing"
)

// testImage draws a w × h picture with some structure and noise (a photo-like file size).
func testImage(w, h int, seed uint64) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	r := rand.New(rand.NewPCG(seed, 1))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			n := uint8(r.IntN(40))
			img.Set(x, y, color.RGBA{uint8(x*255/w) + n, uint8(y*255/h) + n, 128 + n, 255})
		}
	}
	return img
}

// exifAPP1 builds an APP1 Exif segment: a little-endian TIFF with IFD0 holding an ImageDescription
// (desc), a Make, and a pointer to a GPS IFD holding latitude ref "N", latitude 51/1 30/1 12/1,
// longitude ref "W".
func exifAPP1(desc, make string) []byte {
	le := binary.LittleEndian
	var t []byte
	t = append(t, 'I', 'I', 42, 0, 8, 0, 0, 0) // header; IFD0 at 8
	// IFD0: 3 entries (12 bytes each), next-IFD 0.
	ifd0 := 8
	ifd0Len := 2 + 3*12 + 4
	data := ifd0 + ifd0Len // ImageDescription, then Make, then the GPS IFD
	descOff, makeOff := data, data+len(desc)+1
	gpsOff := makeOff + len(make) + 1
	entry := func(b []byte, tag, typ uint16, count, val uint32) []byte {
		b = le.AppendUint16(b, tag)
		b = le.AppendUint16(b, typ)
		b = le.AppendUint32(b, count)
		return le.AppendUint32(b, val)
	}
	t = le.AppendUint16(t, 3)
	t = entry(t, 0x010e, 2, uint32(len(desc)+1), uint32(descOff))
	t = entry(t, 0x010f, 2, uint32(len(make)+1), uint32(makeOff))
	t = entry(t, 0x8825, 4, 1, uint32(gpsOff))
	t = le.AppendUint32(t, 0)
	t = append(t, desc...)
	t = append(t, 0)
	t = append(t, make...)
	t = append(t, 0)
	// GPS IFD: 3 entries; the latitude's rationals follow it.
	ratOff := gpsOff + 2 + 3*12 + 4
	t = le.AppendUint16(t, 3)
	t = entry(t, 0x0001, 2, 2, uint32('N'))
	t = entry(t, 0x0002, 5, 3, uint32(ratOff))
	t = entry(t, 0x0003, 2, 2, uint32('W'))
	t = le.AppendUint32(t, 0)
	for _, v := range []uint32{51, 1, 30, 1, 12, 1} {
		t = le.AppendUint32(t, v)
	}
	seg := append([]byte("Exif\x00\x00"), t...)
	out := []byte{0xff, 0xe1}
	out = binary.BigEndian.AppendUint16(out, uint16(len(seg)+2))
	return append(out, seg...)
}

// withSegment inserts seg right after a JPEG's SOI marker.
func withSegment(jpg, seg []byte) []byte {
	out := append([]byte{}, jpg[:2]...)
	out = append(out, seg...)
	return append(out, jpg[2:]...)
}

// segments lists the markers of a JPEG's header segments, up to its first SOS.
func segments(t *testing.T, b []byte) []byte {
	t.Helper()
	if len(b) < 2 || b[0] != 0xff || b[1] != 0xd8 {
		t.Fatalf("not a JPEG")
	}
	var ms []byte
	for i := 2; i+4 <= len(b); {
		if b[i] != 0xff {
			t.Fatalf("no marker at %d", i)
		}
		m := b[i+1]
		ms = append(ms, m)
		if m == 0xda { // SOS: entropy-coded data follows
			return ms
		}
		i += 2 + int(binary.BigEndian.Uint16(b[i+2:]))
	}
	t.Fatalf("no SOS")
	return nil
}

func TestReencodeStripsEXIF(t *testing.T) {
	var orig bytes.Buffer
	if err := jpeg.Encode(&orig, testImage(2400, 1800, 1), &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	const desc, make = "PATIENT-BED-4-WOUND-DESC", "CAMERA-SERIAL-0042-MAKE"
	in := withSegment(orig.Bytes(), exifAPP1(desc, make))
	markers := [][]byte{[]byte("Exif"), []byte(desc), []byte(make), {0xff, 0xe1}}
	// Control: the scan finds every marker in the input, and image/jpeg reads it.
	for _, m := range markers {
		if !bytes.Contains(in, m) {
			t.Fatalf("control: %q not in the input", m)
		}
	}
	if _, err := jpeg.Decode(bytes.NewReader(in)); err != nil {
		t.Fatalf("control: the input with EXIF does not decode: %v", err)
	}
	out, err := Reencode(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range markers {
		if bytes.Contains(out, m) {
			t.Errorf("%q survived re-encoding", m)
		}
	}
	for _, m := range segments(t, out) {
		if m >= 0xe0 && m <= 0xef || m == 0xfe {
			t.Errorf("metadata segment FF%X in the output", m)
		}
	}
	got, err := jpeg.Decode(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if b := got.Bounds(); b.Dx() != 1600 || b.Dy() != 1200 {
		t.Errorf("output %v; want 1600 × 1200", b)
	}
	if len(out) >= len(in) {
		t.Errorf("output %d bytes, not smaller than the input's %d", len(out), len(in))
	}
	// The picture survives: the mean colour of a region stays close.
	src := testImage(2400, 1800, 1)
	if d := meanDiff(src, image.Rect(600, 450, 900, 675), got, image.Rect(400, 300, 600, 450)); d > 12 {
		t.Errorf("mean colour moved by %.1f", d)
	}
	t.Logf("input %d bytes (EXIF included), output %d bytes", len(in), len(out))
}

func meanDiff(a image.Image, ra image.Rectangle, b image.Image, rb image.Rectangle) float64 {
	mean := func(img image.Image, r image.Rectangle) [3]float64 {
		var s [3]float64
		for y := r.Min.Y; y < r.Max.Y; y++ {
			for x := r.Min.X; x < r.Max.X; x++ {
				cr, cg, cb, _ := img.At(x, y).RGBA()
				s[0], s[1], s[2] = s[0]+float64(cr>>8), s[1]+float64(cg>>8), s[2]+float64(cb>>8)
			}
		}
		n := float64(r.Dx() * r.Dy())
		return [3]float64{s[0] / n, s[1] / n, s[2] / n}
	}
	ma, mb := mean(a, ra), mean(b, rb)
	d := 0.0
	for i := range ma {
		d = max(d, abs(ma[i]-mb[i]))
	}
	return d
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

func TestReencodeSmallPNG(t *testing.T) {
	var in bytes.Buffer
	img := image.NewNRGBA(image.Rect(0, 0, 300, 200)) // transparent: becomes white
	if err := png.Encode(&in, img); err != nil {
		t.Fatal(err)
	}
	out, err := Reencode(in.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	got, err := jpeg.Decode(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if b := got.Bounds(); b.Dx() != 300 || b.Dy() != 200 {
		t.Errorf("small image scaled: %v", b)
	}
	if r, g, b, _ := got.At(150, 100).RGBA(); r>>8 < 250 || g>>8 < 250 || b>>8 < 250 {
		t.Errorf("transparent pixel became %d,%d,%d; want white", r>>8, g>>8, b>>8)
	}
}

func TestReencodeRefuses(t *testing.T) {
	if _, err := Reencode([]byte("%PDF-1.7 not an image")); !errors.Is(err, ErrNotImage) {
		t.Errorf("a PDF: got %v; want ErrNotImage", err)
	}
	// A PNG header claiming 100000 × 100000 pixels is refused before any pixel is decoded.
	var in bytes.Buffer
	if err := png.Encode(&in, image.NewGray(image.Rect(0, 0, 1, 1))); err != nil {
		t.Fatal(err)
	}
	b := in.Bytes()
	binary.BigEndian.PutUint32(b[16:], 100000)
	binary.BigEndian.PutUint32(b[20:], 100000)
	binary.BigEndian.PutUint32(b[29:], crc32.ChecksumIEEE(b[12:29])) // the IHDR chunk's CRC
	if _, err := Reencode(b); err == nil || errors.Is(err, ErrNotImage) {
		t.Errorf("huge image: got %v; want the pixel limit", err)
	}
}

func TestFit(t *testing.T) {
	tests := []struct{ w, h, ww, wh int }{
		{4000, 3000, 1600, 1200}, {3000, 4000, 1200, 1600}, {1600, 10, 1600, 10}, {100000, 1, 1600, 1}, {800, 600, 800, 600},
	}
	for _, tt := range tests {
		if w, h := fit(tt.w, tt.h, MaxDimension); w != tt.ww || h != tt.wh {
			t.Errorf("fit(%d, %d) = %d, %d; want %d, %d", tt.w, tt.h, w, h, tt.ww, tt.wh)
		}
	}
}

// FuzzReencode: no input makes re-encoding panic, and whatever it returns is a JPEG without
// metadata segments that fits MaxDimension.
func FuzzReencode(f *testing.F) {
	var j, p bytes.Buffer
	_ = jpeg.Encode(&j, testImage(40, 30, 2), nil)
	_ = png.Encode(&p, testImage(20, 20, 3))
	f.Add(withSegment(j.Bytes(), exifAPP1("d", "m")))
	f.Add(p.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := Reencode(b)
		if err != nil {
			return
		}
		for _, m := range segments(t, out) {
			if m >= 0xe0 && m <= 0xef || m == 0xfe {
				t.Fatalf("metadata segment FF%X in the output", m)
			}
		}
		cfg, err := jpeg.DecodeConfig(bytes.NewReader(out))
		if err != nil || cfg.Width > MaxDimension || cfg.Height > MaxDimension {
			t.Fatalf("output %v, %v", cfg, err)
		}
	})
}

// BenchmarkReencode measures re-encoding a 12-megapixel camera photo (4000 × 3000, quality 95) to
// what is sent, and reports the bytes in and out.
func BenchmarkReencode(b *testing.B) {
	var in bytes.Buffer
	if err := jpeg.Encode(&in, testImage(4000, 3000, 4), &jpeg.Options{Quality: 95}); err != nil {
		b.Fatal(err)
	}
	var out []byte
	b.ResetTimer()
	for range b.N {
		var err error
		if out, err = Reencode(in.Bytes()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(in.Len()), "bytes-in")
	b.ReportMetric(float64(len(out)), "bytes-out")
}
