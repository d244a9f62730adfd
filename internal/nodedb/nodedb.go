// Package nodedb owns the router's file of node records: what the router
// learned of each node (its breaker, reputation, measured speed, canary
// evidence) and the operator's bans, kept across restarts in one file.
// It holds node records only — never a prompt, an answer or anything of a
// consumer.
//
// The file is a bbolt database (go.etcd.io/bbolt): one file, pure Go, with
// transactions that leave it whole when the router dies mid-write, and
// the file lock that keeps a second router from opening it at the same
// time. Records are opaque bytes to this package; the hub encodes them.
package nodedb

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

var (
	bucketRecords = []byte("records")
	bucketBans    = []byte("bans")
	bucketMeta    = []byte("meta")
)

// schemaVersion is the layout of the file; a file of another version is
// refused rather than misread.
const schemaVersion = "1"

// DB is an open record file. Safe for concurrent use.
type DB struct {
	db *bolt.DB
}

// Open opens (creating if needed, mode 0600, directory 0700) the record
// file at path. A second router cannot open the same file: it waits up to
// timeout for the lock, then fails.
func Open(path string, timeout time.Duration) (*DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open node records: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open node records %s: another router holds the file", path)
		}
		return nil, fmt.Errorf("open node records %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketRecords, bucketBans, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get([]byte("schema")); {
		case v == nil:
			return meta.Put([]byte("schema"), []byte(schemaVersion))
		case string(v) != schemaVersion:
			return fmt.Errorf("schema version %q, this router reads %q", v, schemaVersion)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open node records %s: %w", path, err)
	}
	return &DB{db: db}, nil
}

// Close closes the file.
func (d *DB) Close() error { return d.db.Close() }

// LoadRecords calls each for every record, in key order.
func (d *DB) LoadRecords(each func(key string, data []byte) error) error {
	return d.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRecords).ForEach(func(k, v []byte) error {
			return each(string(k), append([]byte(nil), v...))
		})
	})
}

// SaveRecords writes a batch of records in one transaction; a nil value
// deletes its record.
func (d *DB) SaveRecords(records map[string][]byte) error {
	return d.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords)
		for k, v := range records {
			var err error
			if v == nil {
				err = b.Delete([]byte(k))
			} else {
				err = b.Put([]byte(k), v)
			}
			if err != nil {
				return fmt.Errorf("save node record: %w", err)
			}
		}
		return nil
	})
}

// LoadBans lists the banned ids.
func (d *DB) LoadBans() ([]string, error) {
	var out []string
	err := d.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBans).ForEach(func(k, _ []byte) error {
			out = append(out, string(k))
			return nil
		})
	})
	return out, err
}

// PutBan records or lifts a ban.
func (d *DB) PutBan(id string, banned bool) error {
	return d.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBans)
		if banned {
			return b.Put([]byte(id), []byte(time.Now().UTC().Format(time.RFC3339)))
		}
		return b.Delete([]byte(id))
	})
}
