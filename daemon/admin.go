package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"kmesh.dev/kmesh/daemon/netns"
)

// adminHandler serves the admin API:
//
//	GET  /ready                 200 once attached with a config applied, else 503
//	GET  /status                the Status document
//	GET  /config_dump           the applied model (services, clusters, notes)
//	POST /enroll?netns=REF      enroll a namespace (name under /run/netns or absolute path)
//	POST /unenroll?netns=REF    release it
//	POST /unenroll?cookie=N     release the namespace with this cookie (also one that is gone)
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
		v := d.current()
		if v == nil {
			http.Error(w, "no config applied", http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, http.StatusOK, v.model)
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
		q := r.URL.Query()
		ref, cookie := q.Get("netns"), q.Get("cookie")
		var (
			was bool
			err error
		)
		switch {
		case ref != "" && cookie != "":
			err = fmt.Errorf("unenroll: give netns or cookie, not both: %w", ErrBadRef)
		case cookie != "":
			c, perr := strconv.ParseUint(cookie, 10, 64)
			if perr != nil {
				err = fmt.Errorf("unenroll: cookie %q: %w: %w", cookie, ErrBadRef, perr)
				break
			}
			was, err = d.UnenrollCookie(c, "cookie "+cookie)
		default:
			was, err = d.Unenroll(ref)
		}
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"unenrolled": ref + cookie, "was_enrolled": was})
	})
	return mux
}

func writeErr(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, netns.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrBadRef), errors.Is(err, netns.ErrNotNetns):
		code = http.StatusBadRequest
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
