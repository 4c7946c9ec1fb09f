// Package web holds walcast's browser assets: the JavaScript client
// (walcast-client.js, for frontends to import as it is) and the demo page
// served by walcast when demo mode is on (demo/).
package web

import "embed"

// Files holds walcast-client.js and demo/*.
//
//go:embed walcast-client.js demo/*
var Files embed.FS
