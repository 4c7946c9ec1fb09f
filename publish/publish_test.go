package publish

import (
	"errors"
	"strings"
	"testing"
)

const project = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"

func TestParse(t *testing.T) {
	cases := []struct {
		name, body string
		want       error
		data       string
	}{
		{"event", `{"project_id":"` + project + `","type":"sprint_started","data":{"n":1}}`, nil, `{"n":1}`},
		{"no data", `{"project_id":"` + project + `","type":"ping.me"}`, nil, `{}`},
		{"null data", `{"project_id":"` + project + `","type":"x","data":null}`, nil, `{}`},
		{"uppercase project", `{"project_id":"` + strings.ToUpper(project) + `","type":"x"}`, nil, `{}`},
		{"not json", `nope`, ErrMalformed, ""},
		{"two values", `{"project_id":"` + project + `","type":"x"} {}`, ErrMalformed, ""},
		{"array", `[]`, ErrMalformed, ""},
		{"no project", `{"type":"x"}`, ErrProjectID, ""},
		{"project not a uuid", `{"project_id":"1","type":"x"}`, ErrProjectID, ""},
		{"no type", `{"project_id":"` + project + `"}`, ErrType, ""},
		{"type with a space", `{"project_id":"` + project + `","type":"a b"}`, ErrType, ""},
		{"type from a digit", `{"project_id":"` + project + `","type":"1a"}`, ErrType, ""},
		{"type too long", `{"project_id":"` + project + `","type":"` + strings.Repeat("a", 65) + `"}`, ErrType, ""},
		{"reserved", `{"project_id":"` + project + `","type":"cache_invalidate"}`, ErrReservedType, ""},
		{"reserved in capitals", `{"project_id":"` + project + `","type":"Resync_Required"}`, ErrReservedType, ""},
		{"row event", `{"project_id":"` + project + `","type":"message_created"}`, ErrReservedType, ""},
		{"data a string", `{"project_id":"` + project + `","type":"x","data":"s"}`, ErrData, ""},
		{"data an array", `{"project_id":"` + project + `","type":"x","data":[1]}`, ErrData, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := Parse([]byte(c.body))
			if !errors.Is(err, c.want) {
				t.Fatalf("Parse = %+v, %v; want %v", m, err, c.want)
			}
			if err == nil && (string(m.Data) != c.data || m.ProjectID != project) {
				t.Fatalf("Parse = %+v", m)
			}
		})
	}
}

func TestEncodeParsesBack(t *testing.T) {
	b, err := Encode(strings.ToUpper(project), "typing", map[string]any{"user": "alice"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(b)
	if err != nil || m.ProjectID != project || m.Type != "typing" || string(m.Data) != `{"user":"alice"}` {
		t.Fatalf("%s: %+v %v", b, m, err)
	}
	for _, bad := range []struct {
		typ  string
		data any
		want error
	}{
		{"subscribed", nil, ErrReservedType},
		{"ok", []int{1}, ErrData},
		{"ok", func() {}, ErrData},
		{"", nil, ErrType},
	} {
		if _, err := Encode(project, bad.typ, bad.data); !errors.Is(err, bad.want) {
			t.Errorf("Encode(%q, %v) = %v, want %v", bad.typ, bad.data, err, bad.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"project_id":"` + project + `","type":"x","data":{"a":[1,{"b":null}]}}`))
	f.Add([]byte(`{"project_id":"` + project + `","type":"x","data":"\u0000"}`))
	f.Add([]byte(`{"type":"x"`))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := Parse(body)
		if err != nil {
			return
		}
		// What Parse accepts, Encode accepts and Parse reads back the same.
		b, err := Encode(m.ProjectID, m.Type, m.Data)
		if err != nil {
			t.Fatalf("accepted %q, but Encode refuses it: %v", body, err)
		}
		m2, err := Parse(b)
		if err != nil || m2.ProjectID != m.ProjectID || m2.Type != m.Type {
			t.Fatalf("%q: %+v then %+v %v", body, m, m2, err)
		}
	})
}
