package linepage

import (
	"bufio"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"strconv"
	"time"

	"github.com/edgedrun/edged/publish"
)

// maxImagePixels bounds a gray8 image the page will encode: larger than any line
// camera, small enough that a corrupt size cannot make the box allocate gigabytes.
const maxImagePixels = 64 << 20

// keptImage is one NG image the page still serves. img's bytes belong to the result
// (the pipeline copied them from the frame) and are never written.
type keptImage struct {
	meta imageMeta
	img  *publish.Image
}

// imageMeta describes a kept NG image in the snapshot.
type imageMeta struct {
	ID         string    `json:"id"`
	URL        string    `json:"url"`
	Inspection string    `json:"inspection"`
	Source     string    `json:"source"`
	Seq        uint64    `json:"seq"`
	Label      string    `json:"label"`
	Score      *float64  `json:"score"`
	CapturedAt time.Time `json:"captured_at"`
	Format     string    `json:"format"`
	Width      int       `json:"width"`
	Height     int       `json:"height"`
}

var imageTypes = map[string]string{
	"png":  "image/png",
	"jpeg": "image/jpeg",
	"bmp":  "image/bmp",
}

// checkImage says why img cannot be shown, or nil.
func checkImage(img *publish.Image) error {
	if img.Format == "gray8" {
		if img.Width <= 0 || img.Height <= 0 || img.Width > maxImagePixels/img.Height {
			return fmt.Errorf("gray8 image size %dx%d is out of range", img.Width, img.Height)
		}
		if len(img.Data) < img.Width*img.Height {
			return fmt.Errorf("gray8 image %dx%d has %d bytes, want %d", img.Width, img.Height, len(img.Data), img.Width*img.Height)
		}
		return nil
	}
	if _, ok := imageTypes[img.Format]; !ok {
		return fmt.Errorf("image format %q is not one of gray8, png, jpeg, bmp", img.Format)
	}
	if len(img.Data) == 0 {
		return fmt.Errorf("%s image is empty", img.Format)
	}
	return nil
}

// imageID is the result's own id, unless it is empty or already kept (a repeated
// result): then one made from the count, which no result id looks like.
func (p *Page) imageID(resultID string) string {
	if resultID != "" && p.findLocked(resultID) == nil {
		return resultID
	}
	return "ng-" + strconv.Itoa(p.nImages+1)
}

func (p *Page) findLocked(id string) *keptImage {
	for _, k := range p.images {
		if k != nil && k.meta.ID == id {
			return k
		}
	}
	return nil
}

func (p *Page) serveImage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	p.mu.Lock()
	k := p.findLocked(id)
	p.mu.Unlock()
	if k == nil {
		http.Error(w, fmt.Sprintf("NG image %q is not kept (only the last %d are)", id, len(p.images)), http.StatusNotFound)
		return
	}
	h := w.Header()
	h.Set("Cache-Control", "private, max-age=3600")
	h.Set("X-Content-Type-Options", "nosniff")
	if k.img.Format != "gray8" {
		h.Set("Content-Type", imageTypes[k.img.Format])
		h.Set("Content-Length", strconv.Itoa(len(k.img.Data)))
		_, _ = w.Write(k.img.Data)
		return
	}
	h.Set("Content-Type", "image/png")
	bw := bufio.NewWriterSize(w, 32<<10)
	if err := encodeGray(bw, k.img); err != nil {
		p.log.Warn("NG image not served", "id", id, "err", err)
		return
	}
	if err := bw.Flush(); err != nil {
		p.log.Debug("NG image not served: the browser went away", "id", id, "err", err)
	}
}

var grayEncoder = png.Encoder{CompressionLevel: png.BestSpeed}

func encodeGray(w *bufio.Writer, img *publish.Image) error {
	g := &image.Gray{
		Pix:    img.Data[:img.Width*img.Height],
		Stride: img.Width,
		Rect:   image.Rect(0, 0, img.Width, img.Height),
	}
	if err := grayEncoder.Encode(w, g); err != nil {
		return fmt.Errorf("encode gray8 image %dx%d as png: %w", img.Width, img.Height, err)
	}
	return nil
}
