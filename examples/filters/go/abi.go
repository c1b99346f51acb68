package main

// The Proxy-Wasm ABI 0.2.1, as far as the hello filter needs it: the host
// functions it calls (//go:wasmimport) and the allocator the host calls to
// hand bytes to the filter (//go:wasmexport). Every host function returns a
// status; 0 is OK.

import (
	"encoding/binary"
	"unsafe"
)

// Status codes of host functions.
const (
	statusOK       = 0
	statusNotFound = 1
)

// Log levels of proxy_log.
const (
	logInfo  = 2
	logError = 4
)

// Header maps and buffers the filter reads or writes.
const (
	mapRequestHeaders  = 0
	mapResponseHeaders = 2
	bufferPluginConfig = 7
	actionContinue     = 0
	actionPause        = 1
	noGrpcStatus       = -1
)

//go:wasmimport env proxy_log
func proxyLog(level uint32, msg unsafe.Pointer, msgLen uint32) uint32

//go:wasmimport env proxy_get_buffer_bytes
func proxyGetBufferBytes(buffer, start, maxSize uint32, retData *uint32, retLen *uint32) uint32

//go:wasmimport env proxy_get_header_map_value
func proxyGetHeaderMapValue(mapType uint32, key unsafe.Pointer, keyLen uint32, retData *uint32, retLen *uint32) uint32

//go:wasmimport env proxy_replace_header_map_value
func proxyReplaceHeaderMapValue(mapType uint32, key unsafe.Pointer, keyLen uint32, value unsafe.Pointer, valueLen uint32) uint32

//go:wasmimport env proxy_send_local_response
func proxySendLocalResponse(status uint32, details unsafe.Pointer, detailsLen uint32, body unsafe.Pointer, bodyLen uint32, headers unsafe.Pointer, headersLen uint32, grpcStatus int32) uint32

// The ABI version this module speaks: the host looks for this export.
//
//go:wasmexport proxy_abi_version_0_2_1
func proxyAbiVersion() {}

// pending keeps the blocks handed to the host reachable: the host writes
// their address into our memory as a plain integer, which Go's garbage
// collector does not see. take() releases a block once the filter has it.
var pending = map[uintptr][]byte{}

// The host calls this to get memory for bytes it returns (header values,
// configuration).
//
//go:wasmexport proxy_on_memory_allocate
func proxyOnMemoryAllocate(size uint32) unsafe.Pointer {
	block := make([]byte, max(size, 1))
	ptr := unsafe.Pointer(unsafe.SliceData(block))
	pending[uintptr(ptr)] = block
	return ptr
}

// take turns bytes the host returned (address and length) into a slice and
// lets the collector own the block again. The address is looked up, never
// converted back into a pointer.
func take(addr, length uint32) []byte {
	block, ok := pending[uintptr(addr)]
	if !ok {
		return nil // length 0: the host allocated nothing
	}
	delete(pending, uintptr(addr))
	return block[:length]
}

// data gives the address of a byte slice's first byte (nil when empty).
func data(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }

func logf(level uint32, msg string) {
	proxyLog(level, unsafe.Pointer(unsafe.StringData(msg)), uint32(len(msg)))
}

// getHeader returns the first value of header key in map m, if present.
func getHeader(m uint32, key string) (string, bool) {
	var ptr uint32
	var length uint32
	status := proxyGetHeaderMapValue(m, unsafe.Pointer(unsafe.StringData(key)), uint32(len(key)), &ptr, &length)
	if status != statusOK {
		return "", false
	}
	return string(take(ptr, length)), true
}

func replaceHeader(m uint32, key, value string) uint32 {
	return proxyReplaceHeaderMapValue(m, unsafe.Pointer(unsafe.StringData(key)), uint32(len(key)),
		unsafe.Pointer(unsafe.StringData(value)), uint32(len(value)))
}

// pluginConfiguration returns the plugin configuration; empty when there is none.
func pluginConfiguration(size uint32) []byte {
	var ptr uint32
	var length uint32
	if proxyGetBufferBytes(bufferPluginConfig, 0, size, &ptr, &length) != statusOK {
		return nil
	}
	return take(ptr, length)
}

// sendLocalResponse answers the request from the filter.
func sendLocalResponse(status uint32, details string, body []byte, headers [][2]string) uint32 {
	pairs := serializePairs(headers)
	return proxySendLocalResponse(status, unsafe.Pointer(unsafe.StringData(details)), uint32(len(details)),
		data(body), uint32(len(body)), data(pairs), uint32(len(pairs)), noGrpcStatus)
}

// serializePairs encodes headers the way Proxy-Wasm passes maps: a
// little-endian u32 count, then each key and value length as u32, then each
// key and value followed by a NUL byte.
func serializePairs(headers [][2]string) []byte {
	out := binary.LittleEndian.AppendUint32(nil, uint32(len(headers)))
	for _, h := range headers {
		out = binary.LittleEndian.AppendUint32(out, uint32(len(h[0])))
		out = binary.LittleEndian.AppendUint32(out, uint32(len(h[1])))
	}
	for _, h := range headers {
		out = append(out, h[0]...)
		out = append(out, 0)
		out = append(out, h[1]...)
		out = append(out, 0)
	}
	return out
}
