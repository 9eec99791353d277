//! Agents as data: the spec types, the registry that merges the built-in specs with the user's
//! overrides, and the pure planner that turns a spec and a short code into a [`plan::LaunchPlan`].

pub mod plan;
pub mod registry;
pub mod spec;

pub use plan::{LaunchPlan, LaunchRequest, PlanError, PlannedFile};
pub use registry::Registry;
pub use spec::{AgentSpec, Protocol};
