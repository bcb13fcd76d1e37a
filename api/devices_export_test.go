package api

// ParseNewDevice is parseNewDevice, for the fuzz target of package api_test.
var ParseNewDevice = parseNewDevice
