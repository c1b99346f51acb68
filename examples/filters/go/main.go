// The hello filter, in Go, speaking the Proxy-Wasm ABI directly (abi.go)
// with no third-party module:
//
//   - proxy_on_configure reads {"greeting": "..."} (default "hello") and logs it;
//   - every response gets x-hello: <greeting>;
//   - a request for /forbidden (with or without a query) is answered here with
//     403 and Weir's JSON error body, carrying the request's x-request-id.
//
// Built as a WASI reactor (GOOS=wasip1 GOARCH=wasm -buildmode=c-shared): the
// host calls _initialize once, then the exported callbacks. main never runs.
package main

import (
	"encoding/json"
	"strings"
)

// The greeting when the configuration names none.
const defaultGreeting = "hello"

// greeting is the configured greeting. Weir gives each filter VMs of its
// own with one root context each, so one variable per module is enough.
var greeting = defaultGreeting

// config is the plugin configuration. Members other than "greeting" are
// ignored; anything that is not a JSON object fails to decode, and the
// filter refuses it. Greeting stays raw to tell a missing greeting from a
// null one (encoding/json decodes null into a string as "no change").
type config struct {
	Greeting json.RawMessage `json:"greeting"`
}

// errorBody is Weir's JSON error body, its fields in the order Weir writes them.
type errorBody struct {
	Error struct {
		Status    int    `json:"status"`
		Code      string `json:"code"`
		Message   string `json:"message"`
		RequestID string `json:"request_id"`
	} `json:"error"`
}

func main() {}

//go:wasmexport proxy_on_context_create
func proxyOnContextCreate(contextID, parentID uint32) {}

//go:wasmexport proxy_on_vm_start
func proxyOnVMStart(rootID, vmConfigSize uint32) uint32 { return 1 }

//go:wasmexport proxy_on_configure
func proxyOnConfigure(rootID, configSize uint32) uint32 {
	configured := defaultGreeting
	if raw := pluginConfiguration(configSize); len(raw) > 0 {
		var c config
		if err := json.Unmarshal(raw, &c); err != nil {
			logf(logError, "configuration refused: "+err.Error())
			return 0
		}
		if c.Greeting != nil {
			if string(c.Greeting) == "null" || json.Unmarshal(c.Greeting, &configured) != nil {
				logf(logError, "configuration refused: the greeting is not a string")
				return 0
			}
		}
	}
	// A header value cannot hold control characters: refuse them here
	// rather than fail on every response.
	if strings.ContainsFunc(configured, isASCIIControl) {
		logf(logError, "configuration refused: the greeting holds a control character")
		return 0
	}
	greeting = configured
	logf(logInfo, "configured greeting: "+greeting)
	return 1
}

func isASCIIControl(r rune) bool { return r < 0x20 || r == 0x7f }

//go:wasmexport proxy_on_request_headers
func proxyOnRequestHeaders(contextID, numHeaders, endOfStream uint32) uint32 {
	path, _ := getHeader(mapRequestHeaders, ":path")
	path, _, _ = strings.Cut(path, "?")
	if path != "/forbidden" {
		return actionContinue
	}
	// Weir sets x-request-id before any filter runs.
	requestID, _ := getHeader(mapRequestHeaders, "x-request-id")
	var body errorBody
	body.Error.Status = 403
	body.Error.Code = "forbidden"
	body.Error.Message = "this path is forbidden"
	body.Error.RequestID = requestID
	text, err := json.Marshal(body)
	if err != nil {
		return actionContinue // cannot happen: strings and an int always encode
	}
	sendLocalResponse(403, "forbidden", text, [][2]string{{"content-type", "application/json"}})
	return actionPause
}

//go:wasmexport proxy_on_response_headers
func proxyOnResponseHeaders(contextID, numHeaders, endOfStream uint32) uint32 {
	replaceHeader(mapResponseHeaders, "x-hello", greeting)
	return actionContinue
}
