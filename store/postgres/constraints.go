package postgres

// Names of the schema's constraints, as a *pgconn.PgError reports them in ConstraintName, so code can
// map a violation to a domain error. SQLSTATE tells the kind: 23505 unique, 23503 foreign key,
// 23514 check.
//
// A unique violation on follows names the partition's index (follows_pNN_pkey): insert follows with
// ON CONFLICT DO NOTHING instead of matching that name.
const (
	// users
	ConstraintUserEmailUnique = "users_email_lower_key" // unique index on lower(email)
	ConstraintUserNameLength  = "users_name_length"
	ConstraintUserEmailValid  = "users_email_valid"

	// creators
	ConstraintCreatorUnique            = "creators_pkey" // the user already is a creator
	ConstraintCreatorUser              = "creators_user_fkey"
	ConstraintCreatorProfileNameLength = "creators_profile_name_length"

	// follows
	ConstraintFollowCreator       = "follows_creator_fkey"  // unknown creator
	ConstraintFollowFollower      = "follows_follower_fkey" // unknown user
	ConstraintFollowNoSelf        = "follows_no_self_follow"
	ConstraintFollowKeysImmutable = "follows_keys_immutable" // raised by a trigger, SQLSTATE 23000

	// products
	ConstraintProductCreator           = "products_creator_fkey"
	ConstraintProductCreatorKey        = "products_product_creator_key"
	ConstraintProductTitleLength       = "products_title_length"
	ConstraintProductDescriptionLength = "products_description_length"
	ConstraintProductPriceNonNegative  = "products_price_nonnegative"

	// drops
	ConstraintDropCreator              = "drops_creator_fkey"
	ConstraintDropProductCreator       = "drops_product_creator_fkey" // unknown product, or another creator's
	ConstraintDropMaxPerUserKey        = "drops_drop_max_per_user_key"
	ConstraintDropTimeOrder            = "drops_time_order"
	ConstraintDropInitialStockPositive = "drops_initial_stock_positive"
	ConstraintStockNonNegative         = "drops_stock_nonnegative"
	ConstraintStockWithinInitial       = "drops_stock_within_initial"
	ConstraintDropMaxPerUserPositive   = "drops_max_per_user_positive"
	ConstraintDropStatusValid          = "drops_status_valid"
	ConstraintDropSoldOutHasNoStock    = "drops_sold_out_has_no_stock"

	// orders
	ConstraintOrderUserIdempotencyKey   = "orders_user_idempotency_key"
	ConstraintOrderUser                 = "orders_user_fkey"
	ConstraintOrderDrop                 = "orders_drop_fkey"
	ConstraintOrderQuantityPositive     = "orders_quantity_positive"
	ConstraintOrderStatusValid          = "orders_status_valid"
	ConstraintOrderFailureCode          = "orders_failure_code_only_when_failed"
	ConstraintOrderIdempotencyKeyLength = "orders_idempotency_key_length"
	ConstraintOrderRequestHash          = "orders_request_hash_sha256"

	// drop_purchases
	ConstraintPurchaseWithinLimit         = "drop_purchases_within_limit" // max_per_user exceeded
	ConstraintPurchaseQuantityNonNegative = "drop_purchases_quantity_nonnegative"
	ConstraintPurchaseDropLimit           = "drop_purchases_drop_limit_fkey" // unknown drop or wrong max_per_user copy
	ConstraintPurchaseUser                = "drop_purchases_user_fkey"

	// outbox
	ConstraintOutboxEventIDUnique       = "outbox_event_id_key"
	ConstraintOutboxEventIDLength       = "outbox_event_id_length"
	ConstraintOutboxSubjectLength       = "outbox_subject_length"
	ConstraintOutboxTypeLength          = "outbox_type_length"
	ConstraintOutboxAttemptsNonNegative = "outbox_attempts_nonnegative"
	ConstraintOutboxPublishedOrParked   = "outbox_published_or_parked"

	// devices
	ConstraintDevicePlatformToken     = "devices_platform_token_key"
	ConstraintDeviceUser              = "devices_user_fkey"
	ConstraintDevicePlatformValid     = "devices_platform_valid"
	ConstraintDeviceTokenLength       = "devices_token_length"
	ConstraintDeviceSubscriptionValid = "devices_subscription_valid"
)
