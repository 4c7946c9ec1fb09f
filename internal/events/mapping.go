package events

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
)

// Table describes how one watched table maps to protocol events.
type Table struct {
	// Schema defaults to "public".
	Schema string `yaml:"schema"`
	Name   string `yaml:"name"`
	// Resource is the cache_invalidate resource name ("message" for messages).
	Resource string `yaml:"resource"`
	// IDColumn names the row id sent as cache_invalidate.id; default "id".
	IDColumn string `yaml:"id_column"`
	// ProjectIDColumn names the column holding the project the row belongs to
	// ("id" for the projects table itself).
	ProjectIDColumn string `yaml:"project_id_column"`
	// OnInsert, OnUpdate and OnDelete name the domain event of each action;
	// empty means the action has none.
	OnInsert string `yaml:"on_insert"`
	OnUpdate string `yaml:"on_update"`
	OnDelete string `yaml:"on_delete"`
	// UserIDColumn, when set, marks the membership table: deleting a row
	// revokes that user's subscriptions to the project at that position.
	UserIDColumn string `yaml:"user_id_column"`
	// RevokesProject marks the project table: deleting a row revokes every
	// subscription to that project.
	RevokesProject bool `yaml:"revokes_project"`
}

// QualifiedName is schema.name.
func (t Table) QualifiedName() string { return t.schema() + "." + t.Name }

// SchemaName is the table's schema ("public" when not configured).
func (t Table) SchemaName() string { return t.schema() }

func (t Table) schema() string {
	if t.Schema == "" {
		return "public"
	}
	return t.Schema
}

func (t Table) idColumn() string {
	if t.IDColumn == "" {
		return "id"
	}
	return t.IDColumn
}

// DefaultTables is the mapping of PROTOCOL.md §2 for the reference schema.
func DefaultTables() []Table {
	return []Table{
		{Name: "projects", Resource: "project", ProjectIDColumn: "id", OnUpdate: "project_updated", RevokesProject: true},
		{Name: "sprints", Resource: "sprint", ProjectIDColumn: "project_id", OnInsert: "sprint_created", OnUpdate: "sprint_updated", OnDelete: "sprint_deleted"},
		{Name: "tasks", Resource: "task", ProjectIDColumn: "project_id", OnInsert: "task_created", OnUpdate: "task_updated", OnDelete: "task_deleted"},
		{Name: "messages", Resource: "message", ProjectIDColumn: "project_id", OnInsert: "message_created"},
		{Name: "project_members", Resource: "project_members", ProjectIDColumn: "project_id", OnInsert: "member_added", OnDelete: "member_removed", UserIDColumn: "user_id"},
	}
}

// Options configures a Mapper.
type Options struct {
	Tables []Table
	// BulkThreshold: a transaction touching more than this many rows of one
	// project reaches that project as one BULK cache_invalidate per resource.
	// Zero turns coalescing off.
	BulkThreshold int
	// MaxTxnRows and MaxTxnBytes bound what Retain keeps of one
	// transaction (see there); zero rows keeps everything.
	MaxTxnRows  int
	MaxTxnBytes int
	// Publication is the publication the stream reads: gap markers
	// (GapPrefix) naming it tell every project to resync; others are
	// another deployment's.
	Publication string
	// NumbersAsStrings sends integers past ±(2^53 − 1) and every numeric
	// as JSON strings: JavaScript's JSON.parse rounds them as numbers.
	NumbersAsStrings bool
	// GapKey verifies gap markers (GapKey); markers it does not verify
	// are ignored.
	GapKey []byte
	// PublishPrefix is the prefix of the messages that are published
	// events (package publish); empty delivers none. MaxPublishBytes
	// bounds one's body: a larger one is refused.
	PublishPrefix   string
	MaxPublishBytes int
}

// Mapper turns committed transactions into wire events.
type Mapper struct {
	tables   map[string]*Table // by "schema.name"
	bulk     int
	maxRows  int
	maxBytes int
	pub      string
	// publish is the prefix of published events; maxPublish bounds one.
	publish    string
	maxPublish int
	gapKey     []byte
	numStrings bool
	camel      sync.Map // column name -> JSON key
}

// ErrNoProject is reported for a change whose project id cannot be resolved
// (NULL, or not carried by the replica identity).
var ErrNoProject = errors.New("project id not carried by the change")

// ErrUnmappable is reported for a change of a table that grants access
// whose effect on access cannot be told: walcast revokes conservatively.
var ErrUnmappable = errors.New("change cannot be mapped")

// NewMapper validates opts and builds a Mapper.
func NewMapper(opts Options) (*Mapper, error) {
	if len(opts.Tables) == 0 {
		return nil, errors.New("events: no tables configured")
	}
	if opts.BulkThreshold < 0 {
		return nil, fmt.Errorf("events: bulk threshold %d is negative", opts.BulkThreshold)
	}
	if opts.MaxTxnRows < 0 {
		return nil, fmt.Errorf("events: max transaction rows %d is negative", opts.MaxTxnRows)
	}
	if opts.PublishPrefix == GapPrefix {
		return nil, fmt.Errorf("events: publish prefix %q is walcast's gap marker prefix", GapPrefix)
	}
	m := &Mapper{tables: make(map[string]*Table, len(opts.Tables)), bulk: opts.BulkThreshold, maxRows: opts.MaxTxnRows, maxBytes: opts.MaxTxnBytes, pub: opts.Publication,
		publish: opts.PublishPrefix, maxPublish: opts.MaxPublishBytes, gapKey: opts.GapKey, numStrings: opts.NumbersAsStrings}
	if m.maxPublish <= 0 {
		m.maxPublish = math.MaxInt
	}
	if m.maxBytes <= 0 {
		m.maxBytes = math.MaxInt
	}
	for i := range opts.Tables {
		t := opts.Tables[i]
		switch {
		case t.Name == "":
			return nil, fmt.Errorf("events: table %d has no name", i)
		case t.Resource == "":
			return nil, fmt.Errorf("events: table %s has no resource", t.QualifiedName())
		case t.ProjectIDColumn == "":
			return nil, fmt.Errorf("events: table %s has no project_id_column", t.QualifiedName())
		}
		for _, name := range []string{t.OnInsert, t.OnUpdate, t.OnDelete} {
			if name != "" && !validEventName(name) {
				return nil, fmt.Errorf("events: table %s: event name %q must be lowercase letters and '_'", t.QualifiedName(), name)
			}
		}
		if _, dup := m.tables[t.QualifiedName()]; dup {
			return nil, fmt.Errorf("events: table %s configured twice", t.QualifiedName())
		}
		m.tables[t.QualifiedName()] = &t
	}
	return m, nil
}

// Watches reports whether schema.table is a mapped table.
func (m *Mapper) Watches(schema, table string) bool {
	_, ok := m.tables[schema+"."+table]
	return ok
}

func validEventName(s string) bool {
	for _, r := range s {
		if (r < 'a' || r > 'z') && r != '_' {
			return false
		}
	}
	return true
}

// jsonKey returns the camelCase JSON key of a column name: message_type →
// messageType.
func (m *Mapper) jsonKey(col string) string {
	if v, ok := m.camel.Load(col); ok {
		return v.(string)
	}
	k := CamelCase(col)
	m.camel.Store(col, k)
	return k
}

// CamelCase converts snake_case to camelCase ("created_at" → "createdAt").
func CamelCase(s string) string {
	if !strings.Contains(s, "_") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	upper := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' {
			upper = b.Len() > 0
			continue
		}
		if upper && c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		upper = false
		b.WriteByte(c)
	}
	return b.String()
}

// IdentityColumns lists the columns a DELETE must carry for this table to be
// mapped: the row id, the project id and, for the membership table, the user
// id. The table's replica identity has to include them.
func (t Table) IdentityColumns() []string {
	cols := []string{t.idColumn()}
	if t.ProjectIDColumn != t.idColumn() {
		cols = append(cols, t.ProjectIDColumn)
	}
	if t.UserIDColumn != "" {
		cols = append(cols, t.UserIDColumn)
	}
	return cols
}

// CheckRelation reports what is wrong with the shape the stream gives a
// watched table: a configured column missing (renamed or dropped), or a
// replica identity that does not carry what a DELETE must. Changes of such
// a table cannot all be mapped; they fail closed (Map), and this says why
// as soon as the stream describes the table.
func (m *Mapper) CheckRelation(schema, table string, columns, identity []string) error {
	t, ok := m.tables[schema+"."+table]
	if !ok {
		return nil
	}
	need := t.IdentityColumns()
	for _, c := range need {
		if !slices.Contains(columns, c) {
			return fmt.Errorf("%w: column %s of %s is missing (renamed or dropped?); its changes cannot be mapped", ErrUnmappable, c, t.QualifiedName())
		}
	}
	for _, c := range need {
		if !slices.Contains(identity, c) {
			return fmt.Errorf("%w: the replica identity of %s does not include %s (fix: ALTER TABLE %s REPLICA IDENTITY FULL)", ErrUnmappable, t.QualifiedName(), c, t.QualifiedName())
		}
	}
	return nil
}
