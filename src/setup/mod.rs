//! The first run: `xx setup` picks providers, tests each key against the provider before
//! saving it, and writes the config, the secrets file and a routing profile; [`ready`] is
//! what `xx` checks before each gateway launch.

pub mod ready;
