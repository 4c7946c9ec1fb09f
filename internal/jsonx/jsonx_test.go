package jsonx

import "testing"

func TestMarshalAndIsObject(t *testing.T) {
	b, err := Marshal(map[string]string{"s": "<&>"})
	if err != nil || string(b) != `{"s":"<&>"}` {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
	for raw, want := range map[string]bool{`{}`: true, ` {"a":1}`: true, `[]`: false, `"{"`: false, `{`: false, ``: false, `null`: false} {
		if got := IsObject([]byte(raw)); got != want {
			t.Errorf("IsObject(%q) = %v", raw, got)
		}
	}
}
