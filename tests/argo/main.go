// Command argo-health prints the health Argo CD shows for one Kubernetes object whose kind has a custom health
// check (a resource.customizations.health.<group>_<kind> key of argocd-cm), computed on the Lua VM Argo CD runs
// those checks in: github.com/yuin/gopher-lua, not a C Lua 5.1.
//
//	argo-health [-open-libs] HEALTH.lua [OBJECT.json]     (the object on stdin when OBJECT is absent or -)
//
// It prints one JSON line, {"status": "...", "message": "..."}, with empty fields left out as Argo CD's
// HealthStatus does. Exit 0 when the script produced a health; 1 when it failed, after printing what Argo CD then
// shows (Unknown, with the error as the message) and the error on stderr; 2 on usage or input errors.
//
// Argo CD's own package (github.com/argoproj/argo-cd/v3/util/lua) cannot be built here: its releases need a newer Go
// or a gitops-engine version the module proxy does not serve. So this program rebuilds the few steps that decide a
// health, as Argo CD v3 does them (util/lua/lua.go, gitops-engine pkg/health/health.go):
//   - An object with metadata.deletionTimestamp (and no Argo CD hook finalizer) is Progressing "Pending deletion";
//     the script never sees it.
//   - Without useOpenLibs (the default for argocd-cm scripts) the VM opens only the package, base and table
//     libraries: no string (so strings have no methods either), math, io or debug, and no global os at all; only
//     require("os") answers, with just os.time and os.date. -open-libs opens every gopher-lua library, as Argo CD
//     does with resource.customizations.useOpenLibs and for its built-in scripts (and in its health_test.go).
//   - The object reaches the script as the global `obj`, converted value by value from the decoded object; numbers
//     become Lua numbers (float64), so 64-bit integers above 2^53 lose precision, and a null in an array is dropped
//     (gopher-lua's LTable.Append skips nil) where C Lua would leave a hole.
//   - The script runs with a 1 s deadline. The value on top of the stack afterwards is the result: a table is
//     encoded to JSON (layeh.com/gopher-json, as Argo CD does) and decoded into {status, message}; a status outside
//     Healthy, Progressing, Degraded, Suspended, Missing, Unknown becomes Unknown "Lua returned an invalid health
//     status"; nil, an empty table or a field of the wrong type give an empty health.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	apijson "k8s.io/apimachinery/pkg/util/json"
	luajson "layeh.com/gopher-json"
)

// health is what Argo CD records: gitops-engine's HealthStatus, whose fields are both omitempty.
type health struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
}

var validStatuses = []string{"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}

const (
	// hookFinalizer marks Argo CD's own sync hooks; a hook being deleted still gets its health assessed.
	hookFinalizer = "argocd.argoproj.io/hook-finalizer"
	// scriptDeadline is Argo CD's limit for one health script run.
	scriptDeadline = time.Second
)

func main() {
	openLibs := flag.Bool("open-libs", false, "open every Lua library (resource.customizations.useOpenLibs: true)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: argo-health [-open-libs] HEALTH.lua [OBJECT.json]  (the object on stdin when absent or -)")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() < 1 || flag.NArg() > 2 {
		flag.Usage()
		os.Exit(2)
	}
	script, err := os.ReadFile(flag.Arg(0))
	if err != nil {
		fail(2, err)
	}
	object, err := readObject(flag.Arg(1))
	if err != nil {
		fail(2, err)
	}
	result, scriptErr := resourceHealth(object, string(script), *openLibs)
	out := json.NewEncoder(os.Stdout)
	out.SetEscapeHTML(false) // messages quote Lua errors such as near '<eof>': keep them readable
	if err := out.Encode(result); err != nil {
		fail(2, err)
	}
	if scriptErr != nil {
		fail(1, scriptErr)
	}
}

func fail(code int, err error) {
	fmt.Fprintln(os.Stderr, "argo-health:", err)
	os.Exit(code)
}

// readObject decodes the object as the Argo CD controller holds it: with apimachinery's JSON decoding, the one
// unstructured objects get, which gives int64 for integers and float64 for other numbers (never json.Number, which
// Argo CD would hand to Lua as a string). Unlike unstructured.UnmarshalJSON it does not insist on a kind, so the
// tests can feed the script objects cut down to what it reads.
func readObject(path string) (*unstructured.Unstructured, error) {
	in := io.Reader(os.Stdin)
	if path != "" && path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		in = f
	}
	data, err := io.ReadAll(in)
	if err != nil {
		return nil, err
	}
	var object map[string]any
	if err := apijson.Unmarshal(data, &object); err != nil {
		return nil, fmt.Errorf("decoding the object: %w", err)
	}
	if object == nil {
		return nil, errors.New("the input is not a JSON object")
	}
	return &unstructured.Unstructured{Object: object}, nil
}

// resourceHealth is gitops-engine's GetResourceHealth for a kind with a Lua override: the deletion rule first, then
// the script. When the script fails, Argo CD shows Unknown with the error as the message (and logs the error).
func resourceHealth(obj *unstructured.Unstructured, script string, openLibs bool) (health, error) {
	if obj.GetDeletionTimestamp() != nil && !slices.Contains(obj.GetFinalizers(), hookFinalizer) {
		return health{Status: "Progressing", Message: "Pending deletion"}, nil
	}
	result, err := runHealthScript(obj.Object, script, openLibs)
	if err != nil {
		return health{Status: "Unknown", Message: err.Error()}, err
	}
	return result, nil
}

func runHealthScript(object map[string]any, script string, openLibs bool) (health, error) {
	l := newArgoState(openLibs)
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), scriptDeadline)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, object))

	chunk, err := l.LoadString(script)
	if err != nil {
		return health{}, err
	}
	l.Push(chunk)
	if err := l.PCall(0, lua.MultRet, nil); err != nil {
		var apiErr *lua.ApiError
		if errors.As(err, &apiErr) && apiErr.Type == lua.ApiErrorRun {
			apiErr.StackTrace = "" // Argo CD shows the error without the Lua stack trace
		}
		return health{}, err
	}
	return readResult(l.Get(-1))
}

// newArgoState opens what Argo CD opens. Without -open-libs: package, base and table, and an "os" module holding
// only time and date that is reachable through require alone (Argo CD also tries to register those two under a
// global, but into the already opened table library, where gopher-lua's RegisterModule leaves them out).
func newArgoState(openLibs bool) *lua.LState {
	if openLibs {
		return lua.NewState()
	}
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	for _, open := range []lua.LGFunction{lua.OpenPackage, lua.OpenBase, lua.OpenTable} {
		l.Push(l.NewFunction(open))
		l.Call(0, 0)
	}
	// gopher-lua's own os.time and os.date (Argo CD's safe versions are copies of them); the rest of the library,
	// and the global it registers, are dropped again.
	l.Push(l.NewFunction(lua.OpenOs))
	l.Call(0, 1)
	fullOs := l.CheckTable(-1)
	l.Pop(1)
	safeTime, safeDate := fullOs.RawGetString("time"), fullOs.RawGetString("date")
	l.SetGlobal(lua.OsLibName, lua.LNil)
	loaded := l.GetField(l.Get(lua.RegistryIndex), "_LOADED")
	l.SetField(loaded, lua.OsLibName, lua.LNil)
	l.PreloadModule(lua.OsLibName, func(l *lua.LState) int {
		module := l.NewTable()
		module.RawSetString("time", safeTime)
		module.RawSetString("date", safeDate)
		l.Push(module)
		return 1
	})
	return l
}

// toLua converts a decoded JSON value the way Argo CD's decodeValue does: numbers of any Go type to LNumber,
// json.Number to a string, arrays through LTable.Append (which drops nil elements), anything unknown to nil.
func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case json.Number:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case []any:
		array := l.CreateTable(len(v), 0)
		for _, item := range v {
			array.Append(toLua(l, item))
		}
		return array
	case map[string]any:
		table := l.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetH(lua.LString(key), toLua(l, item))
		}
		return table
	}
	return lua.LNil
}

// readResult turns the script's result into a health as Argo CD's ExecuteHealthLua does.
func readResult(value lua.LValue) (health, error) {
	switch value.Type() {
	case lua.LTNil:
		return health{}, nil
	case lua.LTTable:
	default:
		return health{}, fmt.Errorf("expect table output from Lua script, not %s", value.Type())
	}
	encoded, err := luajson.Encode(value)
	if err != nil {
		return health{}, err
	}
	var result health
	if err := json.Unmarshal(encoded, &result); err != nil {
		// An empty table encodes as [], and a field of another type (message = 3) fails the same way: Argo CD
		// answers both with an empty health, whatever the other field held.
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return health{}, nil
		}
		return health{}, err
	}
	if !slices.Contains(validStatuses, result.Status) {
		return health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return result, nil
}
