//! Pure analyses over the IR: each takes a `&Graph` and returns data.

pub mod constants;
pub mod params;
pub mod segments;
pub mod shapes;
pub mod signature;
pub mod units;

pub use constants::constant_values;
pub use params::{trace_param, ParamRef};
pub use segments::{segments, Segment};
pub use units::{discover_units, LayerAnalysis, ParamRole, Stage, Unit, UnitKind, UnitParam};
