//! Stable JSON-RPC error codes. Scripts match on these numbers, so a code is
//! never reused for another meaning; `openrpc.json` lists the same table.

pub const INTERNAL: i32 = -32603;
pub const INVALID_PARAMS: i32 = -32602;

pub const NOT_INITIALIZED: i32 = -1001;
pub const KEYSTORE_LOCKED: i32 = -1002;
pub const WRONG_PASSWORD: i32 = -1003;
pub const ALREADY_INITIALIZED: i32 = -1004;
pub const INVALID_MNEMONIC: i32 = -1005;
/// A restore found no index pointer signed by this account.
pub const INDEX_NOT_FOUND: i32 = -1006;
/// A restore found the account's pointer but could not read its index.
pub const INDEX_UNREADABLE: i32 = -1007;

pub const FILE_NOT_FOUND: i32 = -2001;
pub const INVALID_PATH: i32 = -2002;
pub const IO: i32 = -2003;

pub const NO_PROVIDER: i32 = -3001;
pub const PROVIDER_UNREACHABLE: i32 = -3002;
pub const PROVIDER_REJECTED: i32 = -3003;

pub const INTEGRITY: i32 = -4001;

pub const INSUFFICIENT_FUNDS: i32 = -5001;
pub const BITCOIND_UNREACHABLE: i32 = -5002;
pub const PRICE_TOO_HIGH: i32 = -5003;
pub const PAYMENT_REJECTED: i32 = -5004;
pub const INVALID_ADDRESS: i32 = -5005;
pub const WALLET: i32 = -5006;

/// Every code with its name, as `openrpc.json` documents them.
pub const ALL: &[(i32, &str)] = &[
    (INTERNAL, "INTERNAL"),
    (INVALID_PARAMS, "INVALID_PARAMS"),
    (NOT_INITIALIZED, "NOT_INITIALIZED"),
    (KEYSTORE_LOCKED, "KEYSTORE_LOCKED"),
    (WRONG_PASSWORD, "WRONG_PASSWORD"),
    (ALREADY_INITIALIZED, "ALREADY_INITIALIZED"),
    (INVALID_MNEMONIC, "INVALID_MNEMONIC"),
    (INDEX_NOT_FOUND, "INDEX_NOT_FOUND"),
    (INDEX_UNREADABLE, "INDEX_UNREADABLE"),
    (FILE_NOT_FOUND, "FILE_NOT_FOUND"),
    (INVALID_PATH, "INVALID_PATH"),
    (IO, "IO"),
    (NO_PROVIDER, "NO_PROVIDER"),
    (PROVIDER_UNREACHABLE, "PROVIDER_UNREACHABLE"),
    (PROVIDER_REJECTED, "PROVIDER_REJECTED"),
    (INTEGRITY, "INTEGRITY"),
    (INSUFFICIENT_FUNDS, "INSUFFICIENT_FUNDS"),
    (BITCOIND_UNREACHABLE, "BITCOIND_UNREACHABLE"),
    (PRICE_TOO_HIGH, "PRICE_TOO_HIGH"),
    (PAYMENT_REJECTED, "PAYMENT_REJECTED"),
    (INVALID_ADDRESS, "INVALID_ADDRESS"),
    (WALLET, "WALLET"),
];
