// Package rollout holds the types that every stage of analyzerd shares: the rollout events
// that come in (CONTRACT.md section 3), the analysis templates they name, the measurements
// compare produces, and the verdicts that go out (section 4). It does no I/O.
package rollout
