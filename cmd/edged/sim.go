package main

func cmdSim(args []string) error { return nil }
