package api

// ParsePlaceOrder is parsePlaceOrder, for the fuzz target of package api_test.
var ParsePlaceOrder = parsePlaceOrder
