package nodedb

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRecordsAndBansSurviveReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "router.db")
	db, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.SaveRecords(map[string][]byte{"k:a": []byte(`{"a":1}`), "k:b": []byte(`{"b":2}`)}); err != nil {
		t.Fatal(err)
	}
	if err := db.SaveRecords(map[string][]byte{"k:b": nil}); err != nil { // delete
		t.Fatal(err)
	}
	if err := db.PutBan("key-x", true); err != nil {
		t.Fatal(err)
	}
	if err := db.PutBan("key-y", true); err != nil {
		t.Fatal(err)
	}
	if err := db.PutBan("key-y", false); err != nil {
		t.Fatal(err)
	}
	// A second router cannot open the same file.
	if _, err := Open(path, 50*time.Millisecond); err == nil || !strings.Contains(err.Error(), "another router") {
		t.Errorf("second open: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v %v, want 0600", fi.Mode(), err)
	}

	db, err = Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got := map[string]string{}
	if err := db.LoadRecords(func(k string, v []byte) error { got[k] = string(v); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got["k:a"] != `{"a":1}` {
		t.Errorf("records after reopening: %v", got)
	}
	bans, err := db.LoadBans()
	if err != nil || len(bans) != 1 || bans[0] != "key-x" {
		t.Errorf("bans after reopening: %v %v", bans, err)
	}
}
