package workload

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// maxProfileBody bounds the body of PUT /profile.
const maxProfileBody = 64 << 10

// Handler serves:
//
//	GET /metrics   the workload's metrics, in the Prometheus exposition formats
//	GET /profile   the current profile as JSON: {"rate":10,"errorRate":0.01,"latencyMedian":"50ms","latencySpread":0.2}
//	PUT /profile   a JSON profile; fields left out keep their current value. 400 when invalid.
func (w *Workload) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(w.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /profile", func(rw http.ResponseWriter, _ *http.Request) {
		writeProfile(rw, w.Profile())
	})
	mux.HandleFunc("PUT /profile", w.putProfile)
	return mux
}

func (w *Workload) putProfile(rw http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(rw, req.Body, maxProfileBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(rw, fmt.Sprintf("profile body exceeds %d bytes", maxProfileBody), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(rw, "reading profile body: "+err.Error(), http.StatusBadRequest)
		return
	}
	// Decode onto the current profile under the lock, so that a partial update cannot undo
	// a concurrent one.
	var jsonErr error
	p, err := w.updateProfile(func(p Profile) Profile {
		jsonErr = json.Unmarshal(body, &p)
		return p
	})
	switch {
	case jsonErr != nil:
		http.Error(rw, "invalid profile JSON: "+jsonErr.Error(), http.StatusBadRequest)
	case err != nil:
		http.Error(rw, err.Error(), http.StatusBadRequest)
	default:
		writeProfile(rw, p)
	}
}

func writeProfile(rw http.ResponseWriter, p Profile) {
	body, err := json.Marshal(p)
	if err != nil {
		http.Error(rw, "encoding profile: "+err.Error(), http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "application/json")
	rw.Write(append(body, '\n'))
}
