// Package photo re-encodes a photo before it is attached to a message: scaled down to what a phone
// screen shows, and written afresh from its decoded pixels, so nothing of the original file but the
// picture survives — no EXIF (GPS position, time, camera serial, thumbnail), XMP, IPTC, ICC profile
// or maker notes. A JPEG's metadata lives in APPn and COM segments, which image/jpeg's decoder skips
// and its encoder never writes.
//
// Defaults, and why:
//
//   - MaxDimension 1600 px on the longer side. Phone screens are 1080–1440 px across; a 1600 px photo
//     fills one in either orientation and still bears a 1.5× zoom, which is what reading a wound
//     edge, a rapid-test line or an ECG trace takes (an A4 ECG across 1600 px is 6 px per mm, so its
//     1 mm grid stays legible). A 12 MP camera photo (4000 × 3000) becomes 1600 × 1200.
//   - Quality 75 (libjpeg's default): no visible blocking at that size, and 150–350 KB for a
//     1600 × 1200 clinical photo, against 2–5 MB for the camera's file: ten times fewer bytes on a
//     health worker's own data plan.
//   - MaxPixels 50 million: larger images are refused before their pixels are decoded (a small file
//     can claim a huge image; 50 MP of RGBA is 200 MB of memory, the most a phone can spare).
//
// A JPEG's EXIF Orientation tag (a phone's portrait photo is stored landscape, with the turn in the
// tag) is applied to the pixels before the metadata goes (Orientation, orientation.go), so the photo
// arrives upright. PNG and GIF inputs are re-encoded as JPEG too, transparent areas on white; a
// PNG's eXIf chunk is not read (cameras write JPEG).
//
// The functions are pure (bytes in, bytes out) and safe for concurrent use.
package photo

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/gif" // decoders registered for image.Decode
	"image/jpeg"
	_ "image/png"
	"strings"

	"golang.org/x/image/draw"
)

// Defaults (see the package documentation).
const (
	MaxDimension = 1600
	Quality      = 75
	MaxPixels    = 50_000_000
)

// MediaType is the media type of what Reencode returns.
const MediaType = "image/jpeg"

// ErrNotImage is returned for bytes that are no JPEG, PNG or GIF image.
var ErrNotImage = errors.New("photo: not a JPEG, PNG or GIF image")

// IsImage reports whether a media type names an image that Reencode takes.
func IsImage(mediaType string) bool {
	switch strings.ToLower(strings.TrimSpace(mediaType)) {
	case "image/jpeg", "image/jpg", "image/png", "image/gif":
		return true
	}
	return false
}

// Reencode decodes data (JPEG, PNG or GIF), scales it so that its longer side is at most
// MaxDimension pixels (never up), turns it upright as a JPEG's EXIF Orientation says, and encodes it as a baseline JPEG of Quality, with no metadata. It
// refuses images above MaxPixels before decoding their pixels.
func Reencode(data []byte) ([]byte, error) {
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotImage, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > MaxPixels {
		return nil, fmt.Errorf("photo: the image is %d × %d pixels, limit %d million", cfg.Width, cfg.Height, MaxPixels/1_000_000)
	}
	src, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotImage, err)
	}
	w, h := fit(src.Bounds().Dx(), src.Bounds().Dy(), MaxDimension)
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	op := draw.Src // a JPEG has no transparency: the fast path
	if o, ok := src.(interface{ Opaque() bool }); !ok || !o.Opaque() {
		draw.Draw(dst, dst.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
		op = draw.Over // transparent areas on white
	}
	draw.CatmullRom.Scale(dst, dst.Bounds(), src, src.Bounds(), op, nil)
	dst = orient(dst, Orientation(data))
	var out bytes.Buffer
	if err := jpeg.Encode(&out, dst, &jpeg.Options{Quality: Quality}); err != nil {
		return nil, fmt.Errorf("photo: encoding: %w", err)
	}
	return out.Bytes(), nil
}

// fit returns w × h scaled so that the longer side is at most max, keeping the aspect ratio (each
// side at least 1), or w × h if it already fits.
func fit(w, h, max int) (int, int) {
	if w <= max && h <= max {
		return w, h
	}
	if w >= h {
		return max, maxInt(1, int(int64(h)*int64(max)/int64(w)))
	}
	return maxInt(1, int(int64(w)*int64(max)/int64(h))), max
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}
