//! Transcript tests of the controller state (filled below).
