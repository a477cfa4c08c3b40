package linepage

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"io"
	"net/http"
	"testing"

	"github.com/edgedrun/edged/publish"
)

func get(t *testing.T, r *rig, path string) (*http.Response, []byte) {
	t.Helper()
	resp, err := r.client.Get(r.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func ngWith(seq uint64, img *publish.Image) *publish.Result {
	r := result(seq, publish.VerdictNG)
	r.Image = img
	return r
}

func TestImagesKeptServedAndRotated(t *testing.T) {
	r := newRig(t, Config{MaxNGImages: 3})
	ctx := context.Background()
	s := r.open(t)
	s.expect(t, "snapshot")

	gray := &publish.Image{Format: "gray8", Width: 4, Height: 3, Data: []byte{
		0, 10, 20, 30,
		40, 50, 60, 70,
		80, 90, 100, 255,
	}}
	pngBytes := []byte("\x89PNG\r\n\x1a\n-not-decoded-just-passed-through")
	publishes := []*publish.Result{
		ngWith(1, gray),
		ngWith(2, &publish.Image{Format: "png", Width: 9, Height: 9, Data: pngBytes}),
		// Not kept: an OK verdict, a short gray8 buffer, an unknown format.
		func() *publish.Result { x := result(3, publish.VerdictOK); x.Image = gray; return x }(),
		ngWith(4, &publish.Image{Format: "gray8", Width: 100, Height: 100, Data: []byte{1, 2}}),
		ngWith(5, &publish.Image{Format: "tiff", Width: 1, Height: 1, Data: []byte{1}}),
		ngWith(6, &publish.Image{Format: "jpeg", Width: 1, Height: 1, Data: []byte{0xff, 0xd8, 0xff}}),
	}
	for _, res := range publishes {
		if err := r.page.Publish(ctx, res); err != nil {
			t.Fatal(err)
		}
	}
	wantImage := map[uint64]string{1: "r000001", 2: "r000002", 3: "", 4: "", 5: "", 6: "r000006"}
	for range publishes {
		var ev struct {
			Seq   uint64
			Image string
		}
		if err := json.Unmarshal([]byte(s.expect(t, "result").data), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Image != wantImage[ev.Seq] {
			t.Fatalf("result %d carries image %q, want %q", ev.Seq, ev.Image, wantImage[ev.Seq])
		}
	}

	resp, body := get(t, r, "/v1/line/images/r000001")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("gray8 image: %s %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	img, err := png.Decode(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("gray8 image is not a valid PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 4 || b.Dy() != 3 {
		t.Fatalf("PNG is %v, want 4x3", b)
	}
	for y := range 3 {
		for x := range 4 {
			g, _, _, _ := img.At(x, y).RGBA()
			if want := uint32(gray.Data[y*4+x]); g>>8 != want {
				t.Fatalf("pixel (%d,%d) = %d, want %d", x, y, g>>8, want)
			}
		}
	}
	resp, body = get(t, r, "/v1/line/images/r000002")
	if resp.Header.Get("Content-Type") != "image/png" || !bytes.Equal(body, pngBytes) {
		t.Fatalf("png image not passed through: %q %q", resp.Header.Get("Content-Type"), body)
	}
	resp, _ = get(t, r, "/v1/line/images/r000006")
	if resp.Header.Get("Content-Type") != "image/jpeg" {
		t.Fatalf("jpeg image served as %q", resp.Header.Get("Content-Type"))
	}
	for _, id := range []string{"r000003", "r000004", "r000005", "nothing"} {
		if resp, _ := get(t, r, "/v1/line/images/"+id); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("image %s: %s, want 404", id, resp.Status)
		}
	}

	// A fourth kept image rotates the oldest out; a repeated result id gets an id of
	// its own.
	if err := r.page.Publish(ctx, ngWith(7, gray)); err != nil {
		t.Fatal(err)
	}
	dup := ngWith(8, gray)
	dup.ID = "r000007"
	if err := r.page.Publish(ctx, dup); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get(t, r, "/v1/line/images/r000001"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("rotated-out image: %s, want 404", resp.Status)
	}
	resp, body = get(t, r, "/v1/line/snapshot")
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("snapshot content type %q", resp.Header.Get("Content-Type"))
	}
	snap := decodeSnapshot(t, string(body))
	var ids []string
	for _, m := range snap.Images {
		ids = append(ids, m.ID)
		if resp, _ := get(t, r, m.URL); resp.StatusCode != http.StatusOK {
			t.Fatalf("kept image %s: %s", m.URL, resp.Status)
		}
	}
	if len(ids) != 3 || ids[0] == "r000007" || ids[1] != "r000007" || ids[2] != "r000006" {
		t.Fatalf("kept images %v, want [<own id> r000007 r000006]", ids)
	}
	if m := snap.Images[1]; m.Label != "ng-label" || m.Score == nil || *m.Score != 0.75 || m.Format != "gray8" || m.Width != 4 || m.Inspection != "surface" {
		t.Fatalf("image metadata %+v", m)
	}
	if snap.MaxImages != 3 {
		t.Fatalf("max_images %d", snap.MaxImages)
	}
}
