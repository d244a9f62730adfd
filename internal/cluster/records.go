package cluster

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idleclaw/idleclaw/internal/hub"
)

// Node records (the breaker, the reputation, the measured speed, the
// canary evidence) are shared through a key-value bucket of their own,
// one key per record (base64url of the record's key, as keys may not
// hold what record keys do), so that a node with a bad history starts
// with it at whichever router it reaches. Each router puts the records it
// changed when its hub saves them (Records wraps the hub's store), and
// applies the others' through Hub.MergeRecord, which decides what wins.
// Entries expire recordsMaxAge after their last put: a node gone for
// that long is forgotten by the network, as its record is by the routers
// once they need the room.

// recordsBucket names the records' bucket.
const recordsBucket = "idleclaw_records"

// recordsMaxAge is how long an entry lives after its last put.
const recordsMaxAge = 7 * 24 * time.Hour

// maxRecordValue bounds one entry: a record as the hub encodes it, in
// its envelope with the putting router's id and instance.
const maxRecordValue = len(`{"r":"","i":"","d":}`) + 64 + instanceLen + hub.MaxRecordBytes

// instanceLen is the length of an instance id: 8 random bytes in hex.
const instanceLen = 16

// recordPutBatch is how many puts are in flight at once.
const recordPutBatch = 256

// sharedRecord is one entry of the bucket: which router put it (its id,
// and its instance: made at each start, so that a router restarted
// under the same id takes what it put before), and the record as that
// router's hub saved it.
type sharedRecord struct {
	Router   string          `json:"r"`
	Instance string          `json:"i"`
	Data     json.RawMessage `json:"d"`
}

func recordBucketKey(key string) string { return base64.RawURLEncoding.EncodeToString([]byte(key)) }

func recordKeyOf(k string) (string, bool) {
	if len(k) > base64.RawURLEncoding.EncodedLen(hub.MaxRecordBytes) {
		return "", false
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(k)
	if err != nil || len(b) == 0 {
		return "", false
	}
	return string(b), true
}

// Records is the hub's record store in a network of routers: it keeps
// what the hub saves in the router's own store, if any (inner may be
// nil: no --records), and shares it with the other routers once the
// cluster is attached (Config.Records). Give it to the hub as its Store:
// the hub then saves (and so shares) what changed every FlushInterval.
type Records struct {
	inner hub.RecordStore

	mu sync.Mutex // guards c
	c  *Cluster
}

// NewRecords wraps inner (or nothing) for sharing.
func NewRecords(inner hub.RecordStore) *Records { return &Records{inner: inner} }

func (s *Records) cluster() *Cluster {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c
}

func (s *Records) attach(c *Cluster) {
	s.mu.Lock()
	s.c = c
	s.mu.Unlock()
}

func (s *Records) detach(c *Cluster) {
	s.mu.Lock()
	if s.c == c {
		s.c = nil
	}
	s.mu.Unlock()
}

// LoadRecords reads the router's own store only: the network's records
// come through the watch.
func (s *Records) LoadRecords(each func(key string, data []byte) error) error {
	if s.inner == nil {
		return nil
	}
	return s.inner.LoadRecords(each)
}

// SaveRecords saves in the router's own store and shares with the
// network. A failure to share is logged (rate-limited), never returned:
// the records stay here and go out again on their next change.
func (s *Records) SaveRecords(records map[string][]byte) error {
	var err error
	if s.inner != nil {
		err = s.inner.SaveRecords(records)
	}
	if c := s.cluster(); c != nil {
		c.shareRecords(records)
	}
	return err
}

// LoadBans reads the router's own store (bans are shared by bans.go).
func (s *Records) LoadBans() ([]string, error) {
	if s.inner == nil {
		return nil, nil
	}
	return s.inner.LoadBans()
}

// PutBan saves in the router's own store.
func (s *Records) PutBan(id string, banned bool) error {
	if s.inner == nil {
		return nil
	}
	return s.inner.PutBan(id, banned)
}

// recordsKV finds or makes the records' bucket.
func (c *Cluster) recordsKV(ctx context.Context) (jetstream.KeyValue, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	kv, err := c.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:       recordsBucket,
		Description:  "idleclaw routers: what each observed of nodes (breaker, reputation, canaries)",
		History:      1,
		TTL:          recordsMaxAge,
		MaxValueSize: int32(maxRecordValue),
		Storage:      jetstream.MemoryStorage,
		Replicas:     c.cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", recordsBucket, err)
	}
	return kv, nil
}

// shareRecords puts what the hub saved in the bucket (a nil value: the
// hub forgot the record, its entry is deleted). Called by the hub's
// flusher, never under its lock; at most recordPutBatch puts (or
// deletes) are in flight at once, all of them bounded in time.
func (c *Cluster) shareRecords(records map[string][]byte) {
	if len(records) == 0 {
		return
	}
	if !c.nc.IsConnected() {
		c.quiet.Warn("nats", "records_not_shared", "nats disconnected: node records kept here, shared on their next change",
			"records", len(records))
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	if _, err := c.recordsKV(ctx); err != nil {
		c.quiet.Warn("nats", "records_not_shared", "cannot share node records", "err", err, "records", len(records))
		return
	}
	failed := 0
	var firstErr error
	fail := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
		failed++
	}
	var acks []jetstream.PubAckFuture
	wait := func() {
		select {
		case <-c.rjs.PublishAsyncComplete():
		case <-ctx.Done():
		}
		for _, a := range acks {
			select {
			case err := <-a.Err():
				fail(err)
			case <-a.Ok():
			default:
				fail(errors.New("no acknowledgement in time"))
			}
		}
		acks = acks[:0]
	}
	left := len(records)
	for key, data := range records {
		if ctx.Err() != nil {
			fail(ctx.Err()) // the rest wait for their next change
			failed += left - 1
			break
		}
		left--
		m := nats.NewMsg("$KV." + recordsBucket + "." + recordBucketKey(key))
		if data == nil {
			m.Header.Set("KV-Operation", "DEL") // as KeyValue.Delete puts it
		} else {
			v, err := json.Marshal(sharedRecord{Router: c.cfg.RouterID, Instance: c.instance, Data: data})
			if err != nil || len(v) > maxRecordValue {
				fail(fmt.Errorf("record of %d bytes not shared", len(data)))
				continue
			}
			m.Data = v
		}
		a, err := c.rjs.PublishMsgAsync(m)
		if err != nil {
			fail(err)
			continue
		}
		if acks = append(acks, a); len(acks) >= recordPutBatch {
			wait()
		}
	}
	wait()
	if failed > 0 {
		c.quiet.Warn("nats", "records_not_shared", "some node records not shared; kept here, shared on their next change",
			"failed", failed, "records", len(records), "err", firstErr)
	}
}

// recordsLoop applies the network's records here until ctx ends,
// watching the bucket again whenever the watch is lost.
func (c *Cluster) recordsLoop(ctx context.Context) {
	watched := false
	c.keepWatching(ctx, "watch records", c.cfg.Interval, func(ctx context.Context) error {
		return c.watchRecords(ctx, &watched)
	})
}

// watchRecords watches the bucket until the watch is lost or the NATS
// connection was made again (the server may be back without its state,
// the bucket empty). Each time after the first, the records of the nodes
// connected here are put again with the hub's next flush; those of nodes
// gone are shared again on their next change.
func (c *Cluster) watchRecords(ctx context.Context, watched *bool) error {
	reconnects := c.nc.Stats().Reconnects
	w, err := c.watchAll(ctx, c.recordsKV, "watch records")
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	if *watched {
		c.hub.TouchConnected()
	}
	*watched = true
	check := time.NewTicker(c.cfg.Interval)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-check.C:
			if c.nc.Stats().Reconnects != reconnects {
				return errors.New("nats reconnected: watching again")
			}
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("records watch ended")
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				// The end of the replay, or a router forgot a record:
				// each router forgets by its own bound.
				continue
			}
			c.applyRecord(e.Key(), e.Value())
		}
	}
}

// applyRecord gives another router's entry to the hub; what is not a
// record (damaged, oversized, filed under another key) is skipped.
func (c *Cluster) applyRecord(k string, v []byte) {
	if len(v) > maxRecordValue {
		c.quiet.Warn("bucket", "bad_record", "skipped an oversized node record from the network", "bytes", len(v))
		return
	}
	var s sharedRecord
	if err := json.Unmarshal(v, &s); err != nil {
		c.quiet.Warn("bucket", "bad_record", "skipped a damaged node record from the network", "err", err)
		return
	}
	if s.Instance == c.instance {
		return // our own put
	}
	key, ok := recordKeyOf(k)
	if !ok {
		c.quiet.Warn("bucket", "bad_record", "skipped a node record under a bad key", "router", s.Router)
		return
	}
	c.hub.MergeRecord(key, s.Data)
}
