package chaos

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// l2Model is the L2 register of one session, as porcupine checks it. The
// register holds none, active or revoked:
//
//   - a read returns it;
//   - an active fill writes active unless it holds revoked, and returns what
//     Redis then holds (revoked stays revoked); it may instead be refused by
//     its time limit, writing nothing (never over revoked: the script checks
//     revoked first);
//   - a revoked fill and a revocation write revoked;
//   - a restart or FLUSHDB (flush), and a DEL (delete), empty it;
//   - an unfill (a fill taken back after Redis lost data)
//     empties it if it holds active, and says whether it did.
//
// An operation whose outcome is unknown (a timeout) may have taken effect
// or not, with any output. The model state is therefore the set of values
// the register may hold (a bit mask of the three), which keeps the model
// deterministic for porcupine.
var l2Model = porcupine.Model{
	Partition: partitionBySession,
	Init:      func() any { return maskNone },
	Step: func(state, input, output any) (bool, any) {
		next := stepSet(state.(uint8), input.(L2Op), output.(string))
		return next != 0, next
	},
	Hash: func(state any) uint64 { return uint64(state.(uint8)) },
	DescribeOperation: func(input, output any) string {
		op := input.(L2Op)
		switch op.Kind {
		case L2Read:
			return fmt.Sprintf("%s read -> %s", op.Replica, output)
		case L2Fill:
			if op.Unknown {
				return fmt.Sprintf("%s fill %s -> ?", op.Replica, op.Status)
			}
			return fmt.Sprintf("%s fill %s -> %s", op.Replica, op.Status, output)
		case L2Revoke:
			if op.Unknown {
				return fmt.Sprintf("%s revoke -> ?", op.Replica)
			}
			return fmt.Sprintf("%s revoke", op.Replica)
		case L2Unfill:
			return fmt.Sprintf("%s unfill -> %s", op.Replica, output)
		case L2Delete:
			return fmt.Sprintf("%s delete", op.Replica)
		}
		return "restart"
	},
	DescribeState: func(state any) string {
		var vs []string
		for i, name := range maskNames {
			if state.(uint8)&(1<<i) != 0 {
				vs = append(vs, name)
			}
		}
		return "{" + strings.Join(vs, ",") + "}"
	},
}

// The register's values as bits of the model state.
const (
	maskNone    uint8 = 1 << iota // StateNone
	maskActive                    // StateActive
	maskRevoked                   // StateRevoked
)

var maskNames = [...]string{StateNone, StateActive, StateRevoked}

func maskOf(v string) uint8 {
	for i, name := range maskNames {
		if name == v {
			return 1 << i
		}
	}
	return 0
}

// stepSet applies op to every value the register may hold and returns the
// values it may hold afterwards (0: op cannot have returned out).
func stepSet(set uint8, op L2Op, out string) uint8 {
	var next uint8
	for i, v := range maskNames {
		if set&(1<<i) == 0 {
			continue
		}
		nv, ok := step(v, op, out)
		switch {
		case op.Unknown:
			next |= maskOf(v) | maskOf(nv)
		case ok:
			next |= maskOf(nv)
		}
	}
	return next
}

// step applies a completed op to the value v.
func step(v string, op L2Op, out string) (string, bool) {
	switch op.Kind {
	case L2Read:
		return v, out == v
	case L2Revoke:
		return StateRevoked, true
	case L2Flush, L2Delete:
		return StateNone, true
	case L2Unfill:
		if v == StateActive {
			return StateNone, op.Unknown || out == OutRemoved
		}
		return v, op.Unknown || out == OutKept
	case L2Fill:
		switch {
		case op.Status != StateActive, v == StateRevoked:
			return StateRevoked, op.Unknown || out == StateRevoked
		case op.Unknown:
			return StateActive, true
		case out == OutRefused:
			return v, true
		default:
			return StateActive, out == StateActive
		}
	}
	return v, false
}

// partitionBySession checks each session's register on its own; a flush
// belongs to every session.
func partitionBySession(history []porcupine.Operation) [][]porcupine.Operation {
	var flushes []porcupine.Operation
	bySession := map[string][]porcupine.Operation{}
	var order []string
	for _, op := range history {
		in := op.Input.(L2Op)
		if in.Kind == L2Flush {
			flushes = append(flushes, op)
			continue
		}
		if _, ok := bySession[in.Session]; !ok {
			order = append(order, in.Session)
		}
		bySession[in.Session] = append(bySession[in.Session], op)
	}
	parts := make([][]porcupine.Operation, 0, len(order))
	for _, s := range order {
		parts = append(parts, append(bySession[s], flushes...))
	}
	return parts
}

// L2Result is the verdict of CheckL2.
type L2Result struct {
	Result porcupine.CheckResult // Illegal if any session is, else Unknown if any is, else Ok
	// Illegal lists the sessions whose register broke the model, with
	// their operations in call order.
	Illegal map[string][]L2Op
	// Visualization is the path of porcupine's HTML rendering of the
	// first illegal session, if it could be written.
	Visualization string
}

// CheckL2 checks the recorded operations against the register model, one
// session at a time (each with every flush), within timeout per session.
// The first illegal session's visualization is written under dir as
// name.html.
func CheckL2(ops []L2Op, timeout time.Duration, dir, name string) L2Result {
	res := L2Result{Result: porcupine.Ok, Illegal: map[string][]L2Op{}}
	history := make([]porcupine.Operation, 0, len(ops))
	for i, op := range ops {
		history = append(history, porcupine.Operation{
			ClientId: i % 64, Input: op, Output: op.Out, Call: op.Call, Return: op.Return,
		})
	}
	single := l2Model
	single.Partition = nil
	for _, part := range partitionBySession(history) {
		r, info := porcupine.CheckOperationsVerbose(single, part, timeout)
		switch r {
		case porcupine.Ok:
			continue
		case porcupine.Unknown:
			if res.Result == porcupine.Ok {
				res.Result = porcupine.Unknown
			}
			continue
		}
		res.Result = porcupine.Illegal
		var sessionOps []L2Op
		for _, op := range part {
			sessionOps = append(sessionOps, op.Input.(L2Op))
		}
		slices.SortFunc(sessionOps, func(a, b L2Op) int { return cmp.Compare(a.Call, b.Call) })
		id := ""
		for _, op := range sessionOps {
			if op.Session != "" {
				id = op.Session
			}
		}
		res.Illegal[id] = sessionOps
		if res.Visualization == "" {
			res.Visualization = visualize(single, info, filepath.Join(dir, name+".html"))
		}
	}
	return res
}

func visualize(m porcupine.Model, info porcupine.LinearizationInfo, path string) string {
	f, err := os.Create(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if err := porcupine.Visualize(m, info, f); err != nil {
		return ""
	}
	return path
}
