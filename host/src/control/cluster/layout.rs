//! The cluster's keys in Redis and the script that publishes a version.

/// How many versions Redis keeps.
pub const KEEP: u64 = 10;

/// Publishes a manifest as the next version if the counter still holds the
/// version the change was based on. KEYS[1]: the counter. ARGV: the expected
/// version, the text, the prefix of version keys, [`KEEP`], the channel, and
/// the lowest number the new version may have (a node seeding a Redis that
/// lost its data numbers on from the version it knew, so no node mistakes
/// the new version 1 for the old one). Answers `{1, new version}` or
/// `{0, the version found}`.
pub(super) const PUBLISH: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current ~= tonumber(ARGV[1]) then return {0, current} end
local version = math.max(current + 1, tonumber(ARGV[6]))
redis.call('SET', ARGV[3] .. version, ARGV[2])
redis.call('SET', KEYS[1], version)
local old = version - tonumber(ARGV[4])
if old > 0 then redis.call('DEL', ARGV[3] .. old) end
redis.call('PUBLISH', ARGV[5], version)
return {1, version}
";

/// The names of a cluster's keys.
pub(super) struct Keys {
    /// The version counter.
    pub(super) version: String,
    /// What a version's number is appended to for its key.
    pub(super) config_prefix: String,
    /// The channel new versions are announced on.
    pub(super) channel: String,
}

impl Keys {
    pub(super) fn new(key: &str) -> Self {
        Self {
            version: format!("weir:{key}:version"),
            config_prefix: format!("weir:{key}:config:"),
            channel: format!("weir:{key}:changes"),
        }
    }

    /// The key of version `version`'s text.
    pub(super) fn config(&self, version: u64) -> String {
        format!("{}{version}", self.config_prefix)
    }
}
