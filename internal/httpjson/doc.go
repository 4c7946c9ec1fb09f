// Package httpjson writes the JSON answers every walcast HTTP route shares:
// a value, or the error body {"error":{"code":…,"message":…}}. It has no
// state and is safe for concurrent use.
package httpjson
