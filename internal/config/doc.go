// Package config loads walcast's settings: defaults, then one YAML file
// (config/walcast.yaml or --config PATH), then WALCAST_* environment
// variables, then flags. Validate names the one setting that is wrong.
//
// Concurrency model: a Config is a plain value, read-only once loaded.
package config
