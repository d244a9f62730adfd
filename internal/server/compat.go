package server

import "net/http"

// compatRoutes registers the drop-in consumer APIs (OpenAI-compatible under
// /v1, Ollama-compatible under /ollama).
func (s *Server) compatRoutes(mux *http.ServeMux) {}
