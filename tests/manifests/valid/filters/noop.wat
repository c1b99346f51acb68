;; The smallest Proxy-Wasm filter: an ABI version marker and nothing else.
(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1")))
