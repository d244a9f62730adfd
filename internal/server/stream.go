package server

import "net/http"

// streamOut writes one dialect's event stream: the headers before the first
// bytes, then each event's bytes, flushed at once unless the dispatcher said
// another event follows immediately (dispatch.Event.More), in which case the
// next write flushes both. Not safe for concurrent use.
type streamOut struct {
	w           http.ResponseWriter
	rc          *http.ResponseController
	contentType string
	started     bool
}

func newStreamOut(w http.ResponseWriter, contentType string) streamOut {
	return streamOut{w: w, rc: http.NewResponseController(w), contentType: contentType}
}

// write sends one event's bytes.
func (o *streamOut) write(b []byte, more bool) error {
	if !o.started {
		h := o.w.Header()
		h.Set("Content-Type", o.contentType)
		h.Set("Cache-Control", "no-store")
		h.Set("X-Accel-Buffering", "no")
		o.w.WriteHeader(http.StatusOK)
		o.started = true
	}
	if _, err := o.w.Write(b); err != nil {
		return err
	}
	if more {
		return nil
	}
	return o.rc.Flush()
}
