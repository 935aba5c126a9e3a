package dev.pulse.registry;

import io.smallrye.config.ConfigSourceInterceptor;
import io.smallrye.config.ConfigSourceInterceptorContext;
import io.smallrye.config.ConfigValue;
import jakarta.annotation.Priority;
import java.util.Set;

/**
 * Apicurio deactivates the datasources of the database kinds it does not use; the Quarkus this
 * build runs on refuses to inject an inactive datasource, and Apicurio injects all of them. Here
 * every one is an in-memory H2 database (application.properties), so all can stay active.
 */
@Priority(Integer.MAX_VALUE)
public class AllDatasourcesActive implements ConfigSourceInterceptor {

    private static final Set<String> ACTIVE = Set.of(
            "quarkus.datasource.postgresql.active", "quarkus.datasource.mssql.active",
            "quarkus.datasource.mysql.active", "quarkus.datasource.h2.active");

    @Override
    public ConfigValue getValue(ConfigSourceInterceptorContext context, String name) {
        if (ACTIVE.contains(name)) {
            return ConfigValue.builder().withName(name).withValue("true").build();
        }
        return context.proceed(name);
    }
}
