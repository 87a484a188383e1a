//! The virtual machine a launch file starts, from the descriptor's hardware: placeholder.
