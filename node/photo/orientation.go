package photo

import (
	"encoding/binary"
	"image"
)

// The EXIF Orientation tag (TIFF tag 0x0112 in IFD0 of a JPEG's APP1 "Exif" segment; EXIF 2.32,
// section 4.6.4 A): how the stored pixels must be turned to show the picture upright. Phones keep
// the sensor's orientation in the pixels and write the turn here, so a photo taken in portrait is
// stored landscape with Orientation 6. Reencode applies it to the pixels, since the output carries
// no EXIF to tell a viewer.
//
//	1 as stored        2 mirrored left-right      3 turned 180°       4 mirrored top-bottom
//	5 transposed       6 turned 90° clockwise     7 transversed       8 turned 90° anticlockwise
//
// Only this one tag is read, by a minimal parser (Orientation): no EXIF library in Go is both kept
// up and small enough to take for one tag.

// maxExifScan bounds how much of a file Orientation reads to find the APP1 segment: the EXIF
// segment comes first after SOI in camera files (APP0 JFIF may precede it).
const maxExifScan = 256 << 10

// Orientation returns the EXIF Orientation (1 to 8) of a JPEG, or 1 (as stored) when data is no
// JPEG, has no EXIF segment before its image data, or the tag is absent or out of range. It never
// reads outside data, and reads at most the first 256 KiB.
func Orientation(data []byte) int {
	if len(data) > maxExifScan {
		data = data[:maxExifScan]
	}
	if len(data) < 4 || data[0] != 0xff || data[1] != 0xd8 {
		return 1
	}
	for p := 2; p+4 <= len(data); {
		if data[p] != 0xff {
			return 1
		}
		marker := data[p+1]
		switch {
		case marker == 0xff: // fill byte
			p++
			continue
		case marker == 0xd8 || marker == 0x01 || (marker >= 0xd0 && marker <= 0xd7):
			p += 2 // no length
			continue
		case marker == 0xda || marker == 0xd9: // image data or end: no EXIF before it
			return 1
		}
		n := int(binary.BigEndian.Uint16(data[p+2:]))
		if n < 2 || p+2+n > len(data) {
			return 1
		}
		seg := data[p+4 : p+2+n]
		if marker == 0xe1 && len(seg) >= 6 && string(seg[:6]) == "Exif\x00\x00" {
			return tiffOrientation(seg[6:])
		}
		p += 2 + n
	}
	return 1
}

// tiffOrientation reads tag 0x0112 from IFD0 of a TIFF structure, or returns 1.
func tiffOrientation(b []byte) int {
	if len(b) < 8 {
		return 1
	}
	var bo binary.ByteOrder
	switch string(b[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 1
	}
	if bo.Uint16(b[2:]) != 42 {
		return 1
	}
	ifd := bo.Uint32(b[4:])
	if ifd < 8 || uint64(ifd)+2 > uint64(len(b)) {
		return 1
	}
	count := int(bo.Uint16(b[ifd:]))
	for i := 0; i < count; i++ {
		e := uint64(ifd) + 2 + uint64(i)*12
		if e+12 > uint64(len(b)) {
			return 1
		}
		entry := b[e : e+12]
		if bo.Uint16(entry) != 0x0112 {
			continue
		}
		// SHORT (type 3), count 1: the value sits in the first two bytes of the value field.
		if bo.Uint16(entry[2:]) != 3 || bo.Uint32(entry[4:]) != 1 {
			return 1
		}
		if o := int(bo.Uint16(entry[8:])); o >= 1 && o <= 8 {
			return o
		}
		return 1
	}
	return 1
}

// orient returns src turned as EXIF orientation o says (src itself for 1 or an unknown value). For
// 5 to 8 the width and height swap.
func orient(src *image.RGBA, o int) *image.RGBA {
	if o < 2 || o > 8 {
		return src
	}
	b := src.Bounds()
	w, h := b.Dx(), b.Dy()
	dw, dh := w, h
	if o >= 5 {
		dw, dh = h, w
	}
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	for y := 0; y < dh; y++ {
		for x := 0; x < dw; x++ {
			var sx, sy int
			switch o {
			case 2:
				sx, sy = w-1-x, y
			case 3:
				sx, sy = w-1-x, h-1-y
			case 4:
				sx, sy = x, h-1-y
			case 5:
				sx, sy = y, x
			case 6:
				sx, sy = y, h-1-x
			case 7:
				sx, sy = w-1-y, h-1-x
			case 8:
				sx, sy = w-1-y, x
			}
			si := src.PixOffset(b.Min.X+sx, b.Min.Y+sy)
			di := dst.PixOffset(x, y)
			copy(dst.Pix[di:di+4], src.Pix[si:si+4])
		}
	}
	return dst
}
