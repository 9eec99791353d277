//! The short-code grammar: `xx <agent><mode>[<route>][<tier>]`, text to [`Code`]. Pure.
//!
//! One grammar accepts every valid code of both earlier launcher generations: the third letter
//! is a route when it is one of `p b d`, otherwise it is a tier letter and the route is proxy;
//! a fourth letter is always a tier. Agent letters come from the agent specs (data), so the
//! parser is handed the set it may accept.

use std::fmt;

/// What the second letter asks the agent to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A new session.
    Init,
    /// The most recent session in this directory.
    Continue,
    /// A picker, or a given session when `-s` is set.
    Resume,
    /// A given session (`-s` required).
    Session,
}

/// The second letter: an action, interactive or headless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Mode {
    pub action: Action,
    pub headless: bool,
}

/// How the agent's traffic travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// Through the gateway, which picks the model.
    Proxy,
    /// Through the gateway, keeping the agent's own model.
    Bypass,
    /// Straight to the agent's own provider; no gateway, inherited redirects removed.
    Direct,
}

/// A model-scan kind, resolved from the model-scan snapshot or config selectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanKind {
    Best,
    Free,
    Tool,
    Reasoning,
    Verifier,
    Fast,
}

impl ScanKind {
    pub fn name(self) -> &'static str {
        match self {
            ScanKind::Best => "best",
            ScanKind::Free => "free",
            ScanKind::Tool => "tool",
            ScanKind::Reasoning => "reasoning",
            ScanKind::Verifier => "verifier",
            ScanKind::Fast => "fast",
        }
    }
}

/// The optional last letter: which model (or routing profile) the whole launch uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// `d n k q`: a named tier from the config's `[tiers]` table.
    Named(char),
    /// `m f t r v s`: a model-scan kind.
    Scan(ScanKind),
    /// `0`-`9`: a slot from the config's `[slots]` table.
    Slot(u8),
}

impl Tier {
    pub fn letter(self) -> char {
        match self {
            Tier::Named(c) => c,
            Tier::Scan(kind) => match kind {
                ScanKind::Best => 'm',
                ScanKind::Free => 'f',
                ScanKind::Tool => 't',
                ScanKind::Reasoning => 'r',
                ScanKind::Verifier => 'v',
                ScanKind::Fast => 's',
            },
            Tier::Slot(n) => char::from(b'0' + n),
        }
    }

    fn from_letter(c: char) -> Option<Tier> {
        Some(match c {
            'd' | 'n' | 'k' | 'q' => Tier::Named(c),
            'm' => Tier::Scan(ScanKind::Best),
            'f' => Tier::Scan(ScanKind::Free),
            't' => Tier::Scan(ScanKind::Tool),
            'r' => Tier::Scan(ScanKind::Reasoning),
            'v' => Tier::Scan(ScanKind::Verifier),
            's' => Tier::Scan(ScanKind::Fast),
            '0'..='9' => Tier::Slot(c as u8 - b'0'),
            _ => return None,
        })
    }
}

/// A parsed short code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Code {
    pub agent: char,
    pub mode: Mode,
    pub route: Route,
    pub tier: Option<Tier>,
}

/// Why a code was rejected; the message lists the valid choices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid code `{code}`: {reason}\n{choices}")]
pub struct CodeError {
    pub code: String,
    pub reason: String,
    pub choices: String,
}

pub const MODE_HELP: &str = "modes: i init, c continue, r resume (picker, or -s <id>), s session by id (-s), \
n non-interactive (headless init); upper-case I C R = headless (needs a prompt)";
pub const ROUTE_HELP: &str = "routes: p proxy (default), b bypass (gateway, agent keeps its model), \
d direct (no gateway)";
pub const TIER_HELP: &str = "tiers: d n k q named tiers from config; m best, f free, t tool, \
r reasoning, v verifier, s fast (model-scan kinds); 0-9 profile slots";

/// Parse `code`, accepting only the agent letters in `agents` (letter, display name).
pub fn parse(code: &str, agents: &[(char, &str)]) -> Result<Code, CodeError> {
    let agent_help = || {
        let list: Vec<String> = agents.iter().map(|(l, n)| format!("{l} {n}")).collect();
        format!("agents: {}", list.join(", "))
    };
    let all_help = || format!("{}\n{MODE_HELP}\n{ROUTE_HELP}\n{TIER_HELP}", agent_help());
    let fail = |reason: String, choices: String| CodeError {
        code: code.to_string(),
        reason,
        choices,
    };

    let chars: Vec<char> = code.chars().collect();
    if chars.len() < 2 {
        return Err(fail(
            "too short: a code is <agent><mode>[<route>][<tier>], e.g. `cip`".into(),
            all_help(),
        ));
    }
    if chars.len() > 4 {
        return Err(fail(
            "too long: at most 4 letters, <agent><mode>[<route>][<tier>]".into(),
            all_help(),
        ));
    }
    let agent = chars[0];
    if !agents.iter().any(|(l, _)| *l == agent) {
        return Err(fail(
            format!("`{agent}` is not an agent letter"),
            agent_help(),
        ));
    }
    let mode = match chars[1] {
        'i' => Mode {
            action: Action::Init,
            headless: false,
        },
        'c' => Mode {
            action: Action::Continue,
            headless: false,
        },
        'r' => Mode {
            action: Action::Resume,
            headless: false,
        },
        's' => Mode {
            action: Action::Session,
            headless: false,
        },
        'n' | 'I' => Mode {
            action: Action::Init,
            headless: true,
        },
        'C' => Mode {
            action: Action::Continue,
            headless: true,
        },
        'R' => Mode {
            action: Action::Resume,
            headless: true,
        },
        other => {
            return Err(fail(
                format!("`{other}` is not a mode letter"),
                MODE_HELP.into(),
            ));
        }
    };

    let rest = &chars[2..];
    let (route, route_explicit, tier_char) = match rest {
        [] => (Route::Proxy, false, None),
        [c] => match route_from(*c) {
            Some(route) => (route, true, None),
            None => (Route::Proxy, false, Some(*c)),
        },
        [r, t] => match route_from(*r) {
            Some(route) => (route, true, Some(*t)),
            None => {
                return Err(fail(
                    format!(
                        "`{r}` is not a route letter (with four letters the third is the route)"
                    ),
                    ROUTE_HELP.into(),
                ));
            }
        },
        _ => unreachable!("length checked above"),
    };
    let tier = match tier_char {
        None => None,
        Some(c) => match Tier::from_letter(c) {
            Some(tier) => Some(tier),
            None if !route_explicit => {
                return Err(fail(
                    format!("`{c}` is neither a route nor a tier letter"),
                    format!("{ROUTE_HELP}\n{TIER_HELP}"),
                ));
            }
            None => {
                return Err(fail(
                    format!("`{c}` is not a tier letter"),
                    TIER_HELP.into(),
                ));
            }
        },
    };
    if let Some(tier) = tier
        && route != Route::Proxy
    {
        return Err(fail(
            format!(
                "tier `{}` needs the proxy route: only the gateway reroutes models \
                 (use `-m <model>` to pick a model on the {} route)",
                tier.letter(),
                route.name()
            ),
            ROUTE_HELP.into(),
        ));
    }
    Ok(Code {
        agent,
        mode,
        route,
        tier,
    })
}

fn route_from(c: char) -> Option<Route> {
    match c {
        'p' => Some(Route::Proxy),
        'b' => Some(Route::Bypass),
        'd' => Some(Route::Direct),
        _ => None,
    }
}

impl Route {
    pub fn name(self) -> &'static str {
        match self {
            Route::Proxy => "proxy",
            Route::Bypass => "bypass",
            Route::Direct => "direct",
        }
    }

    pub fn letter(self) -> char {
        match self {
            Route::Proxy => 'p',
            Route::Bypass => 'b',
            Route::Direct => 'd',
        }
    }

    /// Whether traffic goes through the gateway.
    pub fn uses_gateway(self) -> bool {
        self != Route::Direct
    }
}

impl fmt::Display for Code {
    /// The canonical spelling: agent, mode, route, tier.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match (self.mode.action, self.mode.headless) {
            (Action::Init, false) => 'i',
            (Action::Continue, false) => 'c',
            (Action::Resume, false) => 'r',
            (Action::Session, false) => 's',
            (Action::Init, true) => 'I',
            (Action::Continue, true) => 'C',
            (Action::Resume | Action::Session, true) => 'R',
        };
        write!(f, "{}{}{}", self.agent, mode, self.route.letter())?;
        if let Some(tier) = self.tier {
            write!(f, "{}", tier.letter())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENTS: &[(char, &str)] = &[('c', "Claude Code"), ('x', "Codex"), ('h', "Hermes")];

    fn parsed(text: &str) -> Code {
        parse(text, AGENTS).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn v3_codes_keep_their_meaning() {
        // <AGENT><MODE><ROUTE>[<TIER>]: the third letter is always a route.
        let code = parsed("cipd");
        assert_eq!(
            (code.mode.action, code.route, code.tier),
            (Action::Init, Route::Proxy, Some(Tier::Named('d')))
        );
        assert_eq!(parsed("cid").route, Route::Direct);
        assert_eq!(parsed("hib").route, Route::Bypass);
        assert_eq!(
            parsed("cnp").mode,
            Mode {
                action: Action::Init,
                headless: true
            }
        );
        assert_eq!(parsed("csp").mode.action, Action::Session);
        assert_eq!(parsed("xcpd").tier, Some(Tier::Named('d')));
    }

    #[test]
    fn head_codes_keep_their_meaning() {
        // <agent><run>[route][model]: route defaults to proxy, case means headless.
        let code = parsed("ci");
        assert_eq!((code.route, code.tier), (Route::Proxy, None));
        let code = parsed("ccf");
        assert_eq!(
            (code.mode.action, code.route, code.tier),
            (
                Action::Continue,
                Route::Proxy,
                Some(Tier::Scan(ScanKind::Free))
            )
        );
        assert_eq!(
            parsed("cI").mode,
            Mode {
                action: Action::Init,
                headless: true
            }
        );
        assert_eq!(
            parsed("xR").mode,
            Mode {
                action: Action::Resume,
                headless: true
            }
        );
        assert_eq!(parsed("cip7").tier, Some(Tier::Slot(7)));
        assert_eq!(parsed("ci7").tier, Some(Tier::Slot(7)));
        assert_eq!(parsed("cis").tier, Some(Tier::Scan(ScanKind::Fast)));
    }

    #[test]
    fn display_is_canonical_and_reparses() {
        for text in [
            "cip", "ci", "cipd", "ccf", "cI", "xR", "cnp", "hib", "cid", "cip7",
        ] {
            let code = parsed(text);
            assert_eq!(parsed(&code.to_string()), code, "{text} -> {code}");
        }
    }
}
