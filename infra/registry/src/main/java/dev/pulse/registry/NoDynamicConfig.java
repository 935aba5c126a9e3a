package dev.pulse.registry;

import io.apicurio.common.apps.config.DynamicConfigPropertyList;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.inject.Produces;
import java.util.List;

/**
 * Apicurio's config-index extension would generate this list at build time (the settings an admin
 * may change while the registry runs); its build step is not on Maven Central for this version,
 * so this registry has none: all settings are fixed at start.
 */
@ApplicationScoped
public class NoDynamicConfig {

    @Produces
    @ApplicationScoped
    DynamicConfigPropertyList dynamicConfigProperties() {
        return new DynamicConfigPropertyList(List.of());
    }
}
