package httpjson

import (
	"encoding/json"
	"net/http"
)

// Write answers status with v as JSON, never cached.
func Write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Error answers status with {"error":{"code":code,"message":message}}.
func Error(w http.ResponseWriter, status int, code, message string) {
	Write(w, status, map[string]any{"error": map[string]string{"code": code, "message": message}})
}
