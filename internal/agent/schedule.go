package agent

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Schedule is when the owner lets the node serve: a list of windows, each
// a set of weekdays and an optional time of day range in the machine's
// time zone. "Mon-Fri 22:00-08:00, Sat-Sun" serves weekday nights (a range
// that ends before it starts runs past midnight, into the next day) and
// whole weekends. The zero Schedule is always open.
type Schedule struct {
	windows []window
}

type window struct {
	days       [7]bool // by time.Weekday
	start, end int     // minutes since midnight; start == end: the whole day
}

var weekdays = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// ParseSchedule reads a schedule: windows separated by commas, each
// "DAYS [HH:MM-HH:MM]" or "HH:MM-HH:MM" (every day), where DAYS is a day
// ("Mon") or a range ("Mon-Fri", "Fri-Mon" wraps), or several joined by
// "+" ("Mon+Wed+Fri"). An empty string is always open.
func ParseSchedule(s string) (Schedule, error) {
	var sc Schedule
	if strings.TrimSpace(s) == "" {
		return sc, nil
	}
	if len(s) > 1024 {
		return sc, fmt.Errorf("schedule: too long")
	}
	for _, part := range strings.Split(s, ",") {
		f := strings.Fields(part)
		var w window
		switch len(f) {
		case 1:
			if strings.Contains(f[0], ":") {
				if err := w.setHours(f[0]); err != nil {
					return sc, err
				}
				w.days = [7]bool{true, true, true, true, true, true, true}
			} else if err := w.setDays(f[0]); err != nil {
				return sc, err
			}
		case 2:
			if err := w.setDays(f[0]); err != nil {
				return sc, err
			}
			if err := w.setHours(f[1]); err != nil {
				return sc, err
			}
		default:
			return sc, fmt.Errorf("schedule: %q: want DAYS, HH:MM-HH:MM or DAYS HH:MM-HH:MM", strings.TrimSpace(part))
		}
		sc.windows = append(sc.windows, w)
	}
	return sc, nil
}

func (w *window) setDays(s string) error {
	for _, item := range strings.Split(strings.ToLower(s), "+") {
		from, to, isRange := strings.Cut(item, "-")
		a, ok := weekdays[from]
		if !ok {
			return fmt.Errorf("schedule: %q is not a day (Mon, Tue, ...)", from)
		}
		b := a
		if isRange {
			if b, ok = weekdays[to]; !ok {
				return fmt.Errorf("schedule: %q is not a day (Mon, Tue, ...)", to)
			}
		}
		for d := a; ; d = (d + 1) % 7 {
			w.days[d] = true
			if d == b {
				break
			}
		}
	}
	return nil
}

func (w *window) setHours(s string) error {
	from, to, ok := strings.Cut(s, "-")
	if !ok {
		return fmt.Errorf("schedule: %q: want HH:MM-HH:MM", s)
	}
	var err error
	if w.start, err = minutes(from); err != nil {
		return err
	}
	if w.end, err = minutes(to); err != nil {
		return err
	}
	if w.start == w.end {
		return fmt.Errorf("schedule: %q is an empty range (leave the hours out for the whole day)", s)
	}
	return nil
}

func minutes(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || hh < 0 || hh > 24 || mm < 0 || mm > 59 || (hh == 24 && mm != 0) || len(m) != 2 {
		return 0, fmt.Errorf("schedule: %q is not a time (HH:MM)", s)
	}
	return hh*60 + mm, nil
}

// Open reports whether t (in its own location) falls in a window.
func (sc Schedule) Open(t time.Time) bool {
	if len(sc.windows) == 0 {
		return true
	}
	min := t.Hour()*60 + t.Minute()
	day := t.Weekday()
	yesterday := (day + 6) % 7
	for _, w := range sc.windows {
		switch {
		case w.start == w.end: // whole days
			if w.days[day] {
				return true
			}
		case w.start < w.end:
			if w.days[day] && min >= w.start && min < w.end {
				return true
			}
		default: // past midnight: the evening part today, the morning part from yesterday's start
			if w.days[day] && min >= w.start || w.days[yesterday] && min < w.end {
				return true
			}
		}
	}
	return false
}

// Always reports whether the schedule has no windows (always open).
func (sc Schedule) Always() bool { return len(sc.windows) == 0 }
