-- check_feature: whether a customer's plan includes a feature. Two primary-key
-- lookups in Fluss (the customer, then the plan); each one yields to the worker
-- loop while the request is out, so other conversations go on meanwhile.
return eddy.tool {
  name = "check_feature",
  description = "Check whether the customer's current plan includes a feature "
    .. "(for example sso, exports, webhooks, audit-log)",
  params = {
    customer_id = { type = "string", required = true, description = "Customer id such as C100" },
    feature = { type = "string", required = true, description = "Feature name, lower case" },
  },
  run = function(args, ctx)
    local customer = eddy.fluss.lookup("support.customers", args.customer_id)
    if not customer then
      error("no customer " .. args.customer_id)
    end
    local plan = eddy.fluss.lookup("support.plans", customer.plan)
    if not plan then
      error("customer " .. args.customer_id .. " has an unknown plan '" .. customer.plan .. "'")
    end
    local feature = string.lower(args.feature)
    local included = false
    for f in string.gmatch(plan.features, "[^,]+") do
      if f == feature then
        included = true
      end
    end
    ctx.memory.last_feature_asked = feature
    return {
      customer_id = customer.customer_id,
      plan = customer.plan,
      feature = feature,
      included = included,
      verdict = included and "includes" or "does not include",
      support_hours = plan.support_hours,
    }
  end,
}
