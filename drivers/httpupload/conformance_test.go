package httpupload

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/drivertest"
)

func TestConformance(t *testing.T) {
	var cur atomic.Pointer[Driver]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { cur.Load().ServeHTTP(w, r) }))
	defer srv.Close()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	img := pngImage(t, 8, 8)
	// Uploads run on their own goroutines: with a blocked pipeline the request lasts
	// until Run ends, after the trigger has returned.
	var uploads sync.WaitGroup
	defer uploads.Wait()
	drivertest.Run(t, drivertest.Harness{
		New: func(t testing.TB) drivers.Driver {
			uploads.Wait()
			d := drivertest.Build(t, "httpupload", drivers.Spec{Name: "rig-conf", Budget: 2 * time.Second}, "max_batch: 4\nmax_bytes: 1MiB\n")
			cur.Store(d.(*Driver))
			return d
		},
		Trigger: func(t testing.TB) {
			uploads.Add(1)
			go func() {
				defer uploads.Done()
				resp, err := c.Post(srv.URL, "image/png", bytes.NewReader(img))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}()
		},
	})
}
