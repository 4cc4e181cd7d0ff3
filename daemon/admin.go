package daemon

import (
	"encoding/json"
	"errors"
	"net/http"

	"kmesh.dev/kmesh/daemon/netns"
)

// adminHandler serves the admin API:
//
//	GET  /ready                 200 once attached with a config applied, else 503
//	GET  /status                the Status document
//	GET  /config_dump           the applied model (services, clusters, notes)
//	POST /enroll?netns=REF      enroll a namespace (name under /run/netns or path)
//	POST /unenroll?netns=REF    release it
func (d *Daemon) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		ready, lastErr := d.ready, d.lastError
		d.mu.Unlock()
		if !ready {
			msg := "not ready"
			if lastErr != "" {
				msg += ": " + lastErr
			}
			http.Error(w, msg, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, d.status()) })
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		m := d.applier.Current()
		d.mu.Unlock()
		if m == nil {
			http.Error(w, "no config applied", http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, http.StatusOK, m)
	})
	mux.HandleFunc("POST /enroll", func(w http.ResponseWriter, r *http.Request) {
		e, err := d.Enroll(r.URL.Query().Get("netns"))
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, e)
	})
	mux.HandleFunc("POST /unenroll", func(w http.ResponseWriter, r *http.Request) {
		ref := r.URL.Query().Get("netns")
		if err := d.Unenroll(ref); err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"unenrolled": ref})
	})
	return mux
}

func writeErr(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	if errors.Is(err, netns.ErrNotFound) {
		code = http.StatusNotFound
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
